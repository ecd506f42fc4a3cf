"""The fleet playbooks on three container hosts: rollout.yml stops at a failing host and puts it back,
verify.yml writes a report a person can read, rollback.yml returns a host to stock.

No GPU here, so no real vLLM: each host's server is tests/fixtures/openai_stand_in.py, a STAND-IN
OpenAI-compatible server, and its FA2 library is a small real CUDA library built with nvcc (read by
cuda_fatbin_info, never run): "stock" has sm_80 SASS + PTX like vLLM's wheel, "native" adds sm_121 SASS.
converge deployed release v1 (max-num-seqs 4, stock library); the inventory holds v2 (max-num-seqs 8), and the
rollout also installs the native library (roles/fleet_fake_fa2_update, through fa2_native's fa2_library module,
in place of fa2_native's hours-long build). On dgxspark-fleet-2, v2 never becomes healthy (a stand-in knob).
Real here: the playbooks, systemd, fa2_native's and fa4_shim's snapshot/restore/absent paths, vllm_server's,
the reports. Not exercised: converging uv, vllm_venv, cuda_env, page_cache, fa2_native (the build) and fa4_shim
(the packages and kernel), and vllm_verify (it needs a real vLLM).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import testinfra

ROOT = Path(__file__).resolve().parents[3]
NAMES = ["dgxspark-fleet-1", "dgxspark-fleet-2", "dgxspark-fleet-3"]
SNAPSHOT = "/var/lib/dgxspark/rollback/vllm"
SHIM_SNAPSHOT = "/var/lib/dgxspark/rollback/fa4_shim/snapshot.json"  # fa4_shim_rollback_dir in molecule.yml
LIB = "/opt/vllm/venv/lib/python3.11/site-packages/vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so"


def playbook(name, *extra):
    env = dict(os.environ, ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(ROOT / "playbooks" / name),
                           *extra], capture_output=True, text=True, env=env, check=False, timeout=900)
    return proc.returncode, proc.stdout + proc.stderr


def stand_in_state(host, port=8000):
    out = host.check_output("python3 -c %s", "import urllib.request; print(urllib.request.urlopen("
                            "'http://127.0.0.1:%d/stand-in/state', timeout=10).read().decode())" % port)
    return json.loads(out)


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
    """Roll release v2 out, one host per batch. Returns (rc, output, summary, markdown, state before)."""
    before = {name: h.check_output("systemctl show --property=ActiveEnterTimestamp --value vllm.service")
              for name, h in hosts.items()}
    for name, h in hosts.items():
        assert arg(stand_in_state(h), "--max-num-seqs") == "4", "%s is not on release v1 before the rollout" % name
    reports = tmp_path_factory.mktemp("rollout")
    rc, out = playbook("rollout.yml", "-e", "dgxspark_report_dir=%s" % reports,
                       "-e", '{"dgxspark_rollout_roles": ["fleet_fake_fa2_update", "vllm_server"], '
                       '"dgxspark_rollout_snapshots": ["fa2_native", "fa4_shim"], "dgxspark_rollout_vllm_verify": false}')
    summary = json.loads((reports / "rollout-summary.json").read_text())
    return rc, out, summary, (reports / "rollout-summary.md").read_text(), before


def test_rollout_stops_after_the_failing_host(rollout):
    rc, out, summary, _markdown, _before = rollout
    assert rc == 2, out
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
    # v2's env file change makes the role's handlers restart the service during the converge step.
    assert failed["reason"].startswith('converge failed in "Assert that the service answered /health": '
                                       "dgxspark-fleet-2: vllm.service did not become healthy: "
                                       "http://127.0.0.1:8000/health did not answer 200"), failed["reason"]
    assert "last: HTTP 503" in failed["reason"]
    assert "Last 40 lines" not in failed["reason"]  # the journal stays in the play output, not the summary
    assert failed["restore"] == ("restored fa2_native, fa4_shim, vllm_server; vllm.service put back from %s, restarted: "
                                 "http://127.0.0.1:8000/health answered 200" % SNAPSHOT)
    assert outcome["dgxspark-fleet-1"]["status"] == "updated"
    assert outcome["dgxspark-fleet-1"]["attention_backend"] == "FLASH_ATTN"
    assert "**STOPPED** at dgxspark-fleet-2" in markdown
    assert '| dgxspark-fleet-2 | **ROLLED BACK** | converge failed in "Assert that the service answered /health"' in markdown
    assert "| dgxspark-fleet-3 | not reached |" in markdown


def test_updated_host_runs_the_new_release(hosts, builds, rollout):
    h = hosts["dgxspark-fleet-1"]
    assert arg(stand_in_state(h), "--max-num-seqs") == "8"
    assert h.file(LIB).sha256sum == builds["native"]
    assert h.file(LIB + ".stock").sha256sum == builds["stock"]


def test_failing_host_is_back_on_the_previous_release_and_healthy(hosts, builds, rollout):
    h = hosts["dgxspark-fleet-2"]
    # fa2_native's restore put the library of before the rollout back (the v2 install had replaced it).
    assert h.file(LIB).sha256sum == builds["stock"]
    assert h.file(LIB + ".rollback").exists
    state = stand_in_state(h)  # answers, so /health is up again
    assert arg(state, "--max-num-seqs") == "4"
    assert state["env"]["STAND_IN_HEALTH"] is None
    assert "STAND_IN_HEALTH" not in h.file("/etc/dgxspark/vllm.env").content_string
    assert "'--max-num-seqs' \\\n    '4'" in h.file("/etc/systemd/system/vllm.service").content_string
    assert h.service("vllm.service").is_running
    assert h.file(SNAPSHOT + "/state.json").exists
    # fa4_shim's own snapshot entry point ran too (there was no shim: its snapshot records that).
    assert json.loads(h.file(SHIM_SNAPSHOT).content_string)["files"] == []


def test_host_after_the_stop_was_not_touched(hosts, builds, rollout):
    h = hosts["dgxspark-fleet-3"]
    _rc, _out, _summary, _markdown, before = rollout
    assert h.file(LIB).sha256sum == builds["stock"]
    assert not h.file(LIB + ".rollback").exists and not h.file(LIB + ".stock").exists
    assert arg(stand_in_state(h), "--max-num-seqs") == "4"
    assert not h.file(SNAPSHOT).exists and not h.file(SHIM_SNAPSHOT).exists
    assert h.check_output("systemctl show --property=ActiveEnterTimestamp --value vllm.service") == before["dgxspark-fleet-3"]


@pytest.fixture(scope="module")
def report(hosts, rollout, tmp_path_factory):
    """After the rollout fleet-1 has the native-sm_121 FA2 build and fleet-2 the stock-like one (sm_80 SASS + PTX);
    fleet-3's service is stopped here. Then verify.yml runs."""
    hosts["dgxspark-fleet-3"].check_output("systemctl stop vllm.service")
    reports = tmp_path_factory.mktemp("verify")
    rc, out = playbook("verify.yml", "-e", "dgxspark_report_dir=%s" % reports,
                       "-e", '{"dgxspark_verify_fa2_targets": "12.1a", "dgxspark_verify_vllm_verify": false}')
    assert rc == 0, out
    data = json.loads((reports / "verify-report.json").read_text())
    return data, (reports / "verify-report.md").read_text(), out


def test_verify_report_has_one_row_per_host_with_the_reason(report):
    data, _markdown, _out = report
    rows = {row["host"]: row for row in data["rows"]}
    assert sorted(rows) == NAMES and data["hosts"] == 3
    assert data["counts"] == {"OK": 0, "WARN": 1, "FAIL": 2}
    one, two, three = (rows[name] for name in NAMES)
    # fleet-1: native FA2, healthy, answered; only warnings (no GPU in a container; switch on, no shim files).
    assert one["status"] == "WARN" and one["problems"] == []
    assert "no GPU (nvidia-smi not found on PATH: no NVIDIA driver installed, so no NVIDIA GPU)" in one["warnings"]
    assert "FA4_SM120_SHIM=1 but the shim is not installed" in one["warnings"]
    assert one["fa2_sass"] == ["sm_121", "sm_80"] and one["fa2_ptx"] == [] and one["fa2_build"] == "dgxspark"
    assert one["healthy"] is True and one["smoke_passed"] is True and one["smoke_latency_ms"] >= 0
    assert one["vllm"] == "0.33.0" and one["attention_backend"] == "FLASH_ATTN" and one["fa_version"] == "2"
    # fleet-2: the stock-like library runs sm_12x only through the PTX JIT.
    assert two["status"] == "FAIL"
    assert two["fa2_sass"] == ["sm_80"] and two["fa2_ptx"] == ["sm_80"] and two["fa2_build"] == "stock"
    assert [p for p in two["problems"] if p.startswith("FA2 library: ") and "sm_121" in p], two["problems"]
    # fleet-3: stopped service, and the same library problem.
    assert three["status"] == "FAIL"
    assert "vllm.service is inactive" in three["problems"]
    assert three["healthy"] is False and three["smoke_latency_ms"] is None


def test_verify_markdown_puts_the_failing_hosts_first(report):
    _data, markdown, out = report
    assert "**2 FAIL, 1 WARN, 0 OK** of 3 host(s)." in markdown
    assert "Not right: dgxspark-fleet-2, dgxspark-fleet-3." in markdown
    table = [line for line in markdown.splitlines() if line.startswith("| dgxspark-")]
    assert [line.split(" | ")[0][2:] for line in table] == ["dgxspark-fleet-2", "dgxspark-fleet-3", "dgxspark-fleet-1"]
    assert "vllm.service is inactive" in table[1]
    assert "| up |" in table[0] and "| DOWN |" in table[1]
    assert "dgxspark-fleet-3 FAIL: " in out


def test_verify_changed_nothing_on_the_hosts(report):
    _data, _markdown, out = report
    recaps = [line for line in out.splitlines() if line.startswith("dgxspark-fleet-") and "changed=" in line]
    assert len(recaps) == 3 and all("changed=0" in line and "failed=0" in line for line in recaps), recaps


def test_rollback_puts_a_host_back_to_stock(hosts, builds, report):
    """fa2_native and fa4_shim with state absent (their real absent paths), the kill switch off, a restart."""
    rc, out = playbook("rollback.yml", "-l", "dgxspark-fleet-1")
    assert rc == 0, out
    h = hosts["dgxspark-fleet-1"]
    assert h.file(LIB).sha256sum == builds["stock"]
    assert not h.file(LIB + ".dgxspark.json").exists and not h.file(LIB + ".stock").exists
    assert "FA4_SM120_SHIM=0" in h.file("/etc/dgxspark/vllm.env").content_string
    assert stand_in_state(h)["env"]["FA4_SM120_SHIM"] == "0"
    assert "dgxspark-fleet-1: back to stock; vllm.service healthy" in out
