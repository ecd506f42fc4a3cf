"""dgxspark.vllm.cx7_link (playbooks/link.yml) on two container hosts joined by a veth pair.

Two systemd containers of the shared base image (local/dgxspark-debian:bookworm), with NET_ADMIN, reached with the
docker connection. The test joins them with a veth pair whose ends are named like a Spark's first CX7 port
(enp1s0f0np0): that pair is the stand-in for the QSFP cable, since these machines have no ConnectX-7 card. netplan
(Debian's netplan.io), networkd, ping and iperf3 are the real ones. The role applies with cx7_link_apply=networkd
(netplan generate, then networkd reloads and reconfigures): `netplan apply` also runs `udevadm trigger`, which
needs a writable /sys, and a container without --privileged (which fails on these machines) has a read-only one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from docker_support import docker, require_engine_and_image  # noqa: E402  (tests/ holds the shared helpers)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
IMAGE = os.environ.get("DGX_IMAGE", "local/dgxspark-debian:bookworm")
HOSTS = ["dgxspark-link-1", "dgxspark-link-2"]
PORT = "enp1s0f0np0"
NETPLAN = "/etc/netplan/60-dgxspark-cx7.yaml"


def sh(host, command):
    return docker("exec", host, "sh", "-c", command).stdout.strip()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    require_engine_and_image(IMAGE)
    for host in HOSTS:
        docker("rm", "-f", host, check=False)
    subprocess.run(["ip", "link", "del", "dgxlink-a"], capture_output=True, check=False)
    try:
        pids = []
        for host in HOSTS:
            docker("run", "-d", "--name", host, "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
                   "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro", "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN",
                   "--stop-signal", "SIGRTMIN+3", IMAGE, "/lib/systemd/systemd")
            pids.append(docker("inspect", "-f", "{{.State.Pid}}", host).stdout.strip())
        subprocess.run(["ip", "link", "add", "dgxlink-a", "type", "veth", "peer", "name", "dgxlink-b"], check=True)
        for end, pid in zip(("dgxlink-a", "dgxlink-b"), pids):
            subprocess.run(["ip", "link", "set", end, "netns", pid], check=True)
            subprocess.run(["nsenter", "-t", pid, "-n", "ip", "link", "set", end, "name", PORT], check=True)
        work = tmp_path_factory.mktemp("link")
        inventory = work / "inventory.yml"
        inventory.write_text(json.dumps({"all": {"children": {"spark": {
            "hosts": {host: {} for host in HOSTS},
            "vars": {"ansible_connection": "community.docker.docker", "cx7_link_ports": [PORT],
                     "cx7_link_apply": "networkd", "cx7_link_ping_count": 2}}}}}))
        yield {"inventory": inventory, "work": work}
    finally:
        for host in HOSTS:
            docker("rm", "-f", host, check=False)


def link(pair, *args, inventory=()):
    """Run playbooks/link.yml; return (rc, output, {host: recap line})."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_PIPELINING="true",
               PATH="%s:%s" % (BIN, os.environ.get("PATH", "")))
    sources = ["-i", str(pair["inventory"])] + [a for path in inventory for a in ("-i", str(path))]
    proc = subprocess.run([str(BIN / "ansible-playbook"), *sources, str(ROOT / "playbooks" / "link.yml"), *args],
                          cwd=pair["work"], capture_output=True, text=True, env=env, check=False, timeout=900)
    text = proc.stdout + proc.stderr
    recaps = {line.split()[0]: line for line in text.splitlines() if line.startswith(tuple(HOSTS)) and "changed=" in line}
    return proc.returncode, text, recaps


def state(host):
    return {"mtu": sh(host, "cat /sys/class/net/%s/mtu" % PORT), "operstate": sh(host, "cat /sys/class/net/%s/operstate" % PORT),
            "addresses": sh(host, "ip -4 -o address show dev %s | awk '{print $4}'" % PORT).split()}


@pytest.fixture(scope="module")
def converged(pair):
    rc, text, recaps = link(pair)
    assert rc == 0, text[-5000:]
    return text, recaps


def test_first_run_configures_both_ends_and_pings_at_full_mtu(converged):
    text, recaps = converged
    assert all("changed=0" not in recaps[host] and "failed=0" in recaps[host] for host in HOSTS), recaps
    for number, host in enumerate(HOSTS, start=1):
        assert state(host) == {"mtu": "9000", "operstate": "up", "addresses": ["10.100.1.%d/24" % number]}
        written = sh(host, "cat %s; stat -c %%a %s" % (NETPLAN, NETPLAN))
        assert "mtu: 9000" in written and "- 10.100.1.%d/24" % number in written and written.endswith("600")
    # The role's own check: a don't-fragment ping of 9000 - 28 bytes to the other end, from each end.
    assert "%s -> dgxspark-link-2 10.100.1.2" % PORT in text and "%s -> dgxspark-link-1 10.100.1.1" % PORT in text
    ping = docker("exec", HOSTS[0], "ping", "-M", "do", "-s", "8972", "-c", "1", "-W", "2", "10.100.1.2", check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_second_run_changes_nothing(pair, converged):
    rc, text, recaps = link(pair)
    assert rc == 0, text[-5000:]
    assert all("changed=0" in recaps[host] for host in HOSTS), recaps


def test_an_mtu_changed_by_hand_is_put_back(pair, converged):
    sh(HOSTS[1], "ip link set %s mtu 1500" % PORT)
    rc, text, recaps = link(pair)
    assert rc == 0, text[-5000:]
    assert "changed=0" in recaps[HOSTS[0]] and "changed=0" not in recaps[HOSTS[1]], recaps
    assert state(HOSTS[1])["mtu"] == "9000"


def test_a_peer_with_a_smaller_mtu_fails_the_ping_naming_both_ends(pair, converged):
    """dgxspark-link-2 set to MTU 1500: its own pings (1472 bytes) pass, dgxspark-link-1's 8972-byte ones cannot."""
    extra = pair["work"] / "mtu.yml"
    extra.write_text(json.dumps({"spark": {"hosts": {HOSTS[1]: {"cx7_link_mtu": 1500}}}}))
    try:
        rc, text, recaps = link(pair, inventory=[extra])
        assert rc != 0 and "failed=1" in recaps[HOSTS[0]] and "failed=0" in recaps[HOSTS[1]], recaps
        assert ("dgxspark-link-1: %s does not reach dgxspark-link-2 at 10.100.1.2 with 8972-byte don't-fragment pings"
                " (MTU 9000 here, 1500 on dgxspark-link-2)" % PORT) in text, text[-3000:]
    finally:
        rc, text, _recaps = link(pair)
        assert rc == 0 and state(HOSTS[1])["mtu"] == "9000", text[-3000:]


def test_an_interface_that_does_not_exist_is_refused_before_any_change(pair, converged):
    before = {host: sh(host, "stat -c '%%Y %%s' %s; md5sum %s" % (NETPLAN, NETPLAN)) for host in HOSTS}
    rc, text, recaps = link(pair, "-e", json.dumps({"cx7_link_ports": ["enp9s0f0np0"]}))
    assert rc != 0, text[-3000:]
    for host in HOSTS:
        assert ("%s: cx7_link_ports names 'enp9s0f0np0', which is not an interface of this host (it has: "
                "%s, eth0, lo)" % (host, PORT)) in text, text[-3000:]
        assert "changed=0" in recaps[host]
        assert sh(host, "stat -c '%%Y %%s' %s; md5sum %s" % (NETPLAN, NETPLAN)) == before[host]


def test_addresses_that_share_a_subnet_are_refused(pair, converged):
    settings = {"cx7_link_ports": [PORT, "eth0"], "cx7_link_addresses": {PORT: "10.100.1.7/24", "eth0": "10.100.1.8/24"}}
    rc, text, _recaps = link(pair, "-e", json.dumps(settings))
    assert rc != 0 and "dgxspark-link-1: ports %s, eth0 are all in 10.100.1.0/24" % PORT in text, text[-3000:]


def test_the_bandwidth_gate_fails_with_the_figure(pair, converged):
    rc, text, _recaps = link(pair, "-e", json.dumps({"cx7_link_min_gbits": 100000, "cx7_link_iperf_seconds": 1}))
    assert rc != 0, text[-3000:]
    line = next(line for line in text.splitlines() if "dgxspark-link-1: %s to dgxspark-link-2 (10.100.1.2) carried " % PORT in line)
    figure = float(line.split(" carried ", 1)[1].split()[0])
    assert figure > 0 and "below cx7_link_min_gbits=100000" in line
    rc, text, _recaps = link(pair, "-e", json.dumps({"cx7_link_min_gbits": 0.001, "cx7_link_iperf_seconds": 1}))
    assert rc == 0 and "dgxspark-link-2: %s to dgxspark-link-1: " % PORT in text, text[-3000:]
