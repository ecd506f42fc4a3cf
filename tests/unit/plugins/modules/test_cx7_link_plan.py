"""Unit tests of cx7_link_plan: the address plan (plan(), on interface names given to it) and one run of the module
as Ansible runs it, on this machine's loopback interface."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ansible_collections.dgxspark.vllm.plugins.modules.cx7_link_plan import plan
from ansible_collections.dgxspark.vllm.tests.unit.module_env import module_pythonpath

ROOT = Path(__file__).resolve().parents[4]
MODULE = ROOT / "plugins" / "modules" / "cx7_link_plan.py"
TWINS = ["enp1s0f0np0", "enP2p1s0f0np0"]


def params(**changes):
    base = {"ports": list(TWINS), "network": "10.100.0.0/16", "first_subnet": 1, "host_index": 2, "addresses": {},
            "mtu": 9000, "host": "spark-b", "wait": 0}
    base.update(changes)
    return base


def test_twin_ports_get_one_subnet_each_and_the_host_its_number():
    planned, problems = plan(params(), TWINS + ["lo"])
    assert problems == []
    assert [(p["name"], p["address"], p["subnet"]) for p in planned] == [
        ("enp1s0f0np0", "10.100.1.2/24", "10.100.1.0/24"), ("enP2p1s0f0np0", "10.100.2.2/24", "10.100.2.0/24")]


def test_an_address_given_for_a_port_wins_and_a_larger_network_works():
    planned, problems = plan(params(network="172.16.0.0/12", first_subnet=256, addresses={"enP2p1s0f0np0": "192.168.77.5/24"}),
                             TWINS)
    assert problems == [] and [p["address"] for p in planned] == ["172.17.0.2/24", "192.168.77.5/24"]  # /24 number 256 of 172.16.0.0/12


def test_each_bad_value_is_named_with_the_host():
    cases = [
        (params(ports=["enp9s0"]), "spark-b: cx7_link_ports names 'enp9s0', which is not an interface of this host"),
        (params(network="8.8.0.0/16"), "spark-b: cx7_link_network=8.8.0.0/16 must be a private IPv4 network of /16 or larger"),
        (params(network="10.100.0.0/20"), "spark-b: cx7_link_network=10.100.0.0/20 must be a private"),
        (params(network="10.100.0.1/16"), "spark-b: cx7_link_network='10.100.0.1/16' is not an IPv4 network"),
        (params(host_index=255), "spark-b: cx7_link_host_index=255 is outside 1-254"),
        (params(host_index=0), "spark-b: cx7_link_host_index=0 is outside 1-254"),
        (params(mtu=12000), "spark-b: cx7_link_mtu=12000 is outside 1280-9216"),
        (params(first_subnet=255), "spark-b: cx7_link_first_subnet=255 leaves port enP2p1s0f0np0 outside 10.100.0.0/16"),
        (params(addresses={"enp1s0f0np0": "10.100.1.300/24"}), "spark-b: cx7_link_addresses[enp1s0f0np0]='10.100.1.300/24' is not"),
        (params(addresses={"enp1s0f0np0": "10.100.1.3"}), "spark-b: cx7_link_addresses[enp1s0f0np0]='10.100.1.3' has no prefix"),
        (params(addresses={"eth7": "10.100.1.3/24"}), "spark-b: cx7_link_addresses names eth7, not in cx7_link_ports"),
        (params(addresses={"enp1s0f0np0": "10.100.1.3/24", "enP2p1s0f0np0": "10.100.1.4/24"}),
         "spark-b: ports enp1s0f0np0, enP2p1s0f0np0 are all in 10.100.1.0/24"),
    ]
    for settings, expected in cases:
        _planned, problems = plan(settings, TWINS)
        assert any(problem.startswith(expected) for problem in problems), (expected, problems)


def test_the_module_reads_the_state_of_a_real_interface(tmp_path):
    argsfile = tmp_path / "args.json"
    argsfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"ports": ["lo"], "host_index": 9, "mtu": 1500,
                                                            "_ansible_check_mode": True}}))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin:/usr/sbin:/sbin"), "PYTHONPATH": module_pythonpath()}
    proc = subprocess.run([sys.executable, str(MODULE), str(argsfile)], capture_output=True, text=True, env=env, check=False)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not result.get("failed") and result["changed"] is False, result
    (port,) = result["ports"]
    mtu = int(Path("/sys/class/net/lo/mtu").read_text())
    assert port["name"] == "lo" and port["address"] == "10.100.1.9/24" and port["mtu_now"] == mtu
    assert port["ready"] is (mtu == 1500 and port["operstate"] == "up" and "10.100.1.9/24" in port["addresses_now"])
    assert result["netplan"]["network"]["ethernets"]["lo"] == {"mtu": 1500, "addresses": ["10.100.1.9/24"], "dhcp4": False,
                                                               "dhcp6": False, "optional": True}
