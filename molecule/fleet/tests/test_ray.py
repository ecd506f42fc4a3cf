"""The Ray path of a cluster (issue 15, vllm_server_cluster_backend: ray) on two container "Sparks": what can run here.

dgxspark-fleet-1 (head) and dgxspark-fleet-2 (worker) become the group "raypair" with backend ray, and site.yml's
vllm_server play runs over them: on the head the Ray head unit (vllm-raypair-ray.service, `ray start --head`), on the
worker its unit (vllm-raypair.service, `ray start --address <head>:6379`), both REAL Ray 2.60.0 from the wheelhouse in
the scenario's venvs; the role waits until `ray status` shows both members and both GPUs, then starts vLLM on the head
with `--distributed-executor-backend ray`.

What cannot run here, said plainly: vLLM on Ray. vLLM's CPU platform refuses the Ray executor at start ("current platform
cpu does not support ray"), so the head's vLLM stops there, and the run fails on both members, quoting that line
from the head's journal. So this module checks the Ray cluster that the role forms (nodes and GPUs as `ray status`
reports them, the order of the starts), each unit's flags and environment, and the bad inputs that are refused before
anything changes; not an answer served through Ray, nor a second run that changes nothing (the head's vLLM never
comes up here, so every run restarts the cluster). The containers' eth0 stands in for the ConnectX-7 link, and each
member's Ray gets --num-gpus 1 although it has no GPU: a DGX Spark has one. The units are removed at the end.
"""

from __future__ import annotations

import json
import re

import pytest
import testinfra
from fleet_support import address, megabytes, recap, says
from fleet_support import site as fleet_site

HEAD, WORKER = "dgxspark-fleet-1", "dgxspark-fleet-2"
UNIT, RAY_UNIT = "vllm-raypair.service", "vllm-raypair-ray.service"
RAY = "/opt/vllm/venv/bin/ray"
ARGS = {"dtype": "float32", "max-model-len": 256, "enforce-eager": True, "max-num-seqs": 4, "tensor-parallel-size": 2}
MEMBER = {"vllm_server_service_name": "vllm-raypair", "vllm_server_port": 8200,
          "vllm_server_environment": {"VLLM_CPU_KVCACHE_SPACE": "1", "TORCHDYNAMO_DISABLE": "1"},
          "vllm_server_cluster": "raypair", "vllm_server_cluster_interface": "eth0", "vllm_server_args": ARGS,
          "vllm_server_cluster_backend": "ray", "vllm_server_journal_lines": 300, "vllm_server_health_timeout": 600}


@pytest.fixture(scope="module")
def hosts():
    return {name: testinfra.get_host("docker://" + name) for name in (HEAD, WORKER)}


@pytest.fixture(scope="module")
def work(tmp_path_factory, hosts):
    """A second inventory source that makes fleet-1 and fleet-2 the group "raypair"; the units are removed at the end."""
    path = tmp_path_factory.mktemp("ray")
    (path / "raypair.yml").write_text(json.dumps({"spark": {"children": {"raypair": {"hosts": {HEAD: MEMBER, WORKER: MEMBER}}}}}))
    yield path
    for name in (HEAD, WORKER):
        hosts[name].run("systemctl disable --now %s %s; rm -f /etc/systemd/system/%s /etc/systemd/system/%s /etc/dgxspark/vllm-raypair.env "
                        "/etc/dgxspark/vllm-raypair.settings.json; systemctl daemon-reload; systemctl reset-failed",
                        UNIT, RAY_UNIT, UNIT, RAY_UNIT)


def site(work, *extra):
    return fleet_site(work, "raypair.yml", (HEAD, WORKER), *extra)


def unit(host, name):
    """A unit's ExecStart argv (as systemd parsed it), environment, start time (monotonic, µs) and state."""
    show = dict(line.split("=", 1) for line in host.check_output(
        "systemctl show --property=ExecStart,Environment,ActiveEnterTimestampMonotonic,ActiveState,NRestarts %s", name).splitlines())
    argv = re.search(r"argv\[\]=(.*?) ;", show["ExecStart"]).group(1).split()
    return {"argv": argv, "env": dict(w.split("=", 1) for w in show["Environment"].split() if "=" in w), "state": show["ActiveState"],
            "started": int(show["ActiveEnterTimestampMonotonic"]), "restarts": int(show["NRestarts"])}


def option(argv, name):
    return argv[argv.index(name) + 1]


@pytest.fixture(scope="module")
def ran(work, hosts):
    """One run over the pair, and what the hosts show right after it (before the head's vLLM, which the CPU build
    stops at once, is stopped here, taking the head's Ray with it)."""
    rc, out = site(work)
    head, worker = hosts[HEAD], hosts[WORKER]
    seen = {"rc": rc, "out": out,
            "status": head.run("%s status --address %s:6379", RAY, address(head)),
            "memory": {name: megabytes(hosts[name], u) for name, u in ((HEAD, RAY_UNIT), (WORKER, UNIT))},
            "units": {"head_ray": unit(head, RAY_UNIT), "head_vllm": unit(head, UNIT), "worker": unit(worker, UNIT)},
            "head_env": head.check_output("cat /etc/dgxspark/vllm-raypair.env"), "head_ip": address(head)}
    head.run("systemctl stop %s", UNIT)
    return seen


def test_the_ray_units_form_one_cluster_of_both_members_before_vllm_starts_on_it(ran):
    out = ran["out"]
    print("ray nodes' memory (MiB): %s" % ran["memory"])
    # vLLM was started on the head (only once `ray status` showed both members), and its CPU build refused Ray.
    assert ran["rc"] != 0
    assert "current platform cpu does not support ray" in out, out[-6000:]
    assert says(r"%s: cluster raypair \(head %s, workers %s\) is not healthy" % (WORKER, HEAD, WORKER), out), out[-4000:]
    # The head's vLLM exits and systemd restarts it: that ends the wait at once (not after vllm_server_health_timeout).
    assert says(r"head %s \(rank 0\): .*the unit restarted [0-9]+ time\(s\) while loading" % HEAD, out), out[-6000:]
    assert recap(out, HEAD)["failed"] == 1 and recap(out, WORKER)["failed"] == 1
    # What the role's gate saw before it started vLLM, and what `ray status` shows after the run.
    assert says(r"%s: cluster raypair: Ray at %s:6379 shows 2 of 2 members and 2\.0 of 2\.0 GPUs" % (HEAD, re.escape(ran["head_ip"])), out), out[-6000:]
    status = ran["status"]
    assert status.rc == 0, status.stderr
    assert sum(int(n) for n in re.findall(r"^\s*(\d+) node_[0-9a-f]+", status.stdout, re.M)) == 2, status.stdout
    assert re.search(r"/2\.0 GPU", status.stdout), status.stdout
    units = ran["units"]
    # Up: the head's Ray, then the worker's, then the head's vLLM.
    assert units["head_ray"]["started"] < units["worker"]["started"] < units["head_vllm"]["started"]
    assert units["head_ray"]["state"] == units["worker"]["state"] == "active"
    assert units["head_ray"]["restarts"] == 0 and units["worker"]["restarts"] == 0


def test_each_unit_runs_with_its_flags_and_the_link_environment(ran, hosts):
    head_ip, worker_ip = address(hosts[HEAD]), address(hosts[WORKER])
    head_ray, worker, head_vllm = (ran["units"][k]["argv"] for k in ("head_ray", "worker", "head_vllm"))
    assert head_ray[:3] == [RAY, "start", "--head"] and "--block" in head_ray
    assert option(head_ray, "--port") == "6379" and option(head_ray, "--node-ip-address") == head_ip
    assert option(head_ray, "--num-gpus") == "1" and option(head_ray, "--temp-dir") == "/var/lib/vllm/ray"
    assert worker[:2] == [RAY, "start"] and "--head" not in worker and "--block" in worker
    assert option(worker, "--address") == "%s:6379" % head_ip and option(worker, "--node-ip-address") == worker_ip
    assert option(head_vllm, "--distributed-executor-backend") == "ray"
    assert option(head_vllm, "--tensor-parallel-size") == "2"
    for flag in ("--nnodes", "--node-rank", "--master-addr", "--headless"):
        assert flag not in head_vllm
    assert ran["units"]["head_vllm"]["env"]["RAY_ADDRESS"] == "%s:6379" % head_ip
    env = dict(line.split("=", 1) for line in ran["head_env"].splitlines() if "=" in line and not line.startswith("#"))
    assert {k: env.get(k) for k in ("VLLM_HOST_IP", "GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")} == {
        "VLLM_HOST_IP": '"%s"' % head_ip, "GLOO_SOCKET_IFNAME": '"eth0"', "NCCL_SOCKET_IFNAME": '"eth0"'}, ran["head_env"]


def test_a_ray_version_other_than_the_pinned_one_is_refused_naming_each_host(work, ran):
    rc, out = site(work, "-e", "vllm_server_ray_version=2.59.0")
    assert rc != 0
    for name in (HEAD, WORKER):
        assert says(r"%s: cluster raypair \(vllm_server_cluster_backend=ray\): /opt/vllm/venv holds Ray 2\.60\.0, but "
                    r"vllm_server_ray_version=2\.59\.0" % name, out), out[-4000:]
        assert recap(out, name)["changed"] == 0


def test_an_unknown_backend_is_refused_naming_it(work, ran):
    rc, out = site(work, "-e", "vllm_server_cluster_backend=slurm")
    assert rc != 0
    for name in (HEAD, WORKER):
        assert says(r'%s: vllm_server_cluster_backend="slurm": value of vllm_server_cluster_backend must be one of: mp, ray, got: '
                    r"slurm" % name, out), out[-4000:]
        assert recap(out, name)["changed"] == 0


def test_state_stopped_stops_the_heads_vllm_and_every_ray_unit(work, ran, hosts):
    hosts[HEAD].run("systemctl start %s", UNIT)  # the fixture stopped it; a stop must stop it again
    rc, out = site(work, "-e", "vllm_server_state=stopped")
    assert rc == 0, out[-4000:]
    for name, names in ((HEAD, (UNIT, RAY_UNIT)), (WORKER, (UNIT,))):
        for one in names:
            assert unit(hosts[name], one)["state"] in ("inactive", "failed"), (name, one)
