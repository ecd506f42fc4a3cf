#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dgxspark.vllm contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cx7_link_plan
short_description: Plan the addresses of a host's ConnectX-7 ports and read the ports' state, in one call
version_added: 0.1.0
description:
  - Gives each port in O(ports) its address, from O(addresses) when set there, else derived from O(network)
    (a private IPv4 network of /16 or larger), where port number I (counting from 0) gets the /24 number
    O(first_subnet) + I of that network and the host number O(host_index) in it. Twin ports of one card therefore
    land in different subnets, and the same port on every host of a cluster in the same one (one /24 per cable).
  - Reads each port's state from C(/sys/class/net) and C(ip -json address), that is whether it exists, its operational
    state, its MTU and its IPv4 addresses now.
  - Returns the netplan document that configures the ports (renderer C(networkd), the MTU, the address, no DHCP,
    C(optional) set so that boot does not wait for a cable).
  - Fails, naming O(host) and the value, on a port that does not exist, a network that is not private IPv4 or is
    smaller than /16, a host number outside 1-254, an address that is not an IPv4 interface address, two ports in one
    subnet, or an MTU outside 1280-9216.
  - Read-only. Supports check mode and never reports changed.
options:
  ports:
    description: The interface names of the ConnectX-7 ports to configure, in cable order.
    type: list
    elements: str
    required: true
  network:
    description: The private IPv4 network the addresses are derived from.
    type: str
    default: 10.100.0.0/16
  first_subnet:
    description: The number of the /24 (inside O(network)) of the first port.
    type: int
    default: 1
  host_index:
    description: The host number of this host in every /24 (1-254).
    type: int
  addresses:
    description: Addresses by port name (C(10.100.1.1/24)), instead of derived ones.
    type: dict
    default: {}
  mtu:
    description: The MTU of every port.
    type: int
    default: 9000
  wait:
    description:
      - Seconds to wait for every port to be up with O(mtu) and its planned address before the state is returned
        (after a change is applied). V(0) reads the state once.
    type: int
    default: 0
  host:
    description: The name failures begin with (pass C({{ inventory_hostname }})).
    type: str
    default: this host
author:
  - dgxspark.vllm maintainers (@dgxspark)
"""

EXAMPLES = r"""
- name: Plan the CX7 ports of this host
  dgxspark.vllm.cx7_link_plan:
    ports: [enp1s0f0np0, enP2p1s0f0np0]
    network: 10.100.0.0/16
    host_index: "{{ groups['pair1'].index(inventory_hostname) + 1 }}"
    host: "{{ inventory_hostname }}"
  register: plan
"""

RETURN = r"""
ports:
  description: One entry per port, in the order of O(ports).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The interface name.
      type: str
    address:
      description: The planned address with its prefix length.
      type: str
      sample: 10.100.1.1/24
    ip:
      description: The planned address alone.
      type: str
      sample: 10.100.1.1
    subnet:
      description: The subnet of the planned address.
      type: str
      sample: 10.100.1.0/24
    exists:
      description: Whether the interface exists now.
      type: bool
    operstate:
      description: Its operational state now (C(up), C(down), C(lowerlayerdown), ...), or V(null).
      type: str
    mtu_now:
      description: Its MTU now, or V(null).
      type: int
    addresses_now:
      description: Its IPv4 addresses now, with their prefix lengths.
      type: list
      elements: str
    ready:
      description: Whether it is up, with O(mtu) and its planned address.
      type: bool
netplan:
  description: The netplan document for the ports.
  returned: always
  type: dict
"""

import ipaddress
import json
import os
import time

from ansible.module_utils.basic import AnsibleModule

SYS_NET = "/sys/class/net"


def read_sys(name, attribute):
    try:
        with open(os.path.join(SYS_NET, name, attribute), encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return None


def ipv4_addresses(module):
    """{interface: [address/prefix, ...]} from `ip -json address`, or {} where ip is missing."""
    ip = module.get_bin_path("ip")
    if not ip:
        return {}
    rc, out, _err = module.run_command([ip, "-json", "-family", "inet", "address", "show"])
    if rc != 0:
        return {}
    found = {}
    for link in json.loads(out or "[]"):
        found[link.get("ifname")] = ["%s/%s" % (a["local"], a["prefixlen"]) for a in link.get("addr_info", [])
                                     if a.get("family") == "inet"]
    return found


def plan(params, available):
    """(ports, problems): the planned address of every port, and what is wrong with the settings."""
    host = params["host"]
    problems = []
    mtu = params["mtu"]
    if not 1280 <= mtu <= 9216:
        problems.append("%s: cx7_link_mtu=%s is outside 1280-9216" % (host, mtu))
    ports = params["ports"]
    if not ports:
        problems.append("%s: cx7_link_ports is empty: name the host's ConnectX-7 interfaces" % host)
    for name in ports:
        if name not in available:
            problems.append("%s: cx7_link_ports names %r, which is not an interface of this host (it has: %s)"
                            % (host, name, ", ".join(sorted(available)) or "none"))
    unknown = sorted(set(params["addresses"]) - set(ports))
    if unknown:
        problems.append("%s: cx7_link_addresses names %s, not in cx7_link_ports" % (host, ", ".join(unknown)))
    network = None
    if any(name not in params["addresses"] for name in ports):
        try:
            network = ipaddress.IPv4Network(params["network"], strict=True)
        except ValueError as exc:
            problems.append("%s: cx7_link_network=%r is not an IPv4 network (%s)" % (host, params["network"], exc))
        else:
            if not network.is_private or network.prefixlen > 16:
                problems.append("%s: cx7_link_network=%s must be a private IPv4 network of /16 or larger"
                                % (host, network))
                network = None
        index = params["host_index"]
        if index is None or not 1 <= index <= 254:
            problems.append("%s: cx7_link_host_index=%s is outside 1-254" % (host, index))
            network = None
    planned = []
    for number, name in enumerate(ports):
        if name in params["addresses"]:
            text = str(params["addresses"][name])
            try:
                interface = ipaddress.IPv4Interface(text)
            except ValueError:
                problems.append("%s: cx7_link_addresses[%s]=%r is not an IPv4 address with a prefix (10.100.1.1/24)"
                                % (host, name, text))
                continue
            if "/" not in text or interface.network.prefixlen == 32:
                problems.append("%s: cx7_link_addresses[%s]=%r has no prefix length (10.100.1.1/24)" % (host, name, text))
                continue
        elif network is not None:
            subnets = 2 ** (24 - network.prefixlen)
            which = params["first_subnet"] + number
            if not 0 <= which < subnets:
                problems.append("%s: cx7_link_first_subnet=%s leaves port %s outside %s"
                                % (host, params["first_subnet"], name, network))
                continue
            base = int(network.network_address) + (which << 8)
            interface = ipaddress.IPv4Interface("%s/24" % ipaddress.IPv4Address(base + params["host_index"]))
        else:
            continue
        planned.append({"name": name, "address": str(interface), "ip": str(interface.ip),
                        "subnet": str(interface.network)})
    subnets = {}
    for port in planned:
        subnets.setdefault(port["subnet"], []).append(port["name"])
    for subnet, names in sorted(subnets.items()):
        if len(names) > 1:
            problems.append("%s: ports %s are all in %s; each port (each cable) needs a subnet of its own"
                            % (host, ", ".join(names), subnet))
    return planned, problems


def main():
    module = AnsibleModule(
        argument_spec=dict(
            ports=dict(type="list", elements="str", required=True),
            network=dict(type="str", default="10.100.0.0/16"),
            first_subnet=dict(type="int", default=1),
            host_index=dict(type="int"),
            addresses=dict(type="dict", default={}),
            mtu=dict(type="int", default=9000),
            wait=dict(type="int", default=0),
            host=dict(type="str", default="this host"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    available = sorted(os.listdir(SYS_NET)) if os.path.isdir(SYS_NET) else []
    planned, problems = plan(params, available)
    if problems:
        module.fail_json(msg="; ".join(problems), problems=problems)
    deadline = time.monotonic() + max(params["wait"], 0)
    while True:
        now = ipv4_addresses(module)
        for port in planned:
            mtu_now = read_sys(port["name"], "mtu")
            port.update(exists=True, operstate=read_sys(port["name"], "operstate"),
                        mtu_now=int(mtu_now) if mtu_now and mtu_now.isdigit() else None,
                        addresses_now=now.get(port["name"], []))
        for port in planned:
            port["ready"] = port["operstate"] == "up" and port["mtu_now"] == params["mtu"] and port["address"] in port["addresses_now"]
        if all(port["ready"] for port in planned) or time.monotonic() >= deadline:
            break
        time.sleep(1)
    ethernets = {}
    for port in planned:
        ethernets[port["name"]] = {"mtu": params["mtu"], "addresses": [port["address"]], "dhcp4": False,
                                   "dhcp6": False, "optional": True}
    module.exit_json(changed=False, ports=planned,
                     netplan={"network": {"version": 2, "renderer": "networkd", "ethernets": ethernets}})


if __name__ == "__main__":
    main()
