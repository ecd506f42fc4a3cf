"""The vllm_server role's failures, run for real against the scenario's container.

One ansible-playbook run (on the controller, against the scenario's inventory) runs the role once per
case: with a STAND-IN server knob (tests/fixtures/openai_stand_in.py; no GPU here, so no real vLLM)
that makes the server answer wrongly, never become healthy or crash; or with settings the role must
refuse. Each case catches the role's failure in a rescue and writes the failed task and its message to
a JSON file on the controller, which the tests read. The cases use their own service names and ports,
so the scenario's two services stay untouched; their units are removed afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

HOST = "dgxspark-vllm_server"
SCENARIO = Path(__file__).resolve().parents[1]

# name -> (entry point, role variables)
CASES = {
    "wrong": ("main", {"vllm_server_service_name": "vllm-wrong", "vllm_server_port": 8102,
                       "vllm_server_environment": {"STAND_IN_ANSWER": "wrong"}}),
    "sick": ("main", {"vllm_server_service_name": "vllm-sick", "vllm_server_port": 8103, "vllm_server_health_timeout": 4,
                      "vllm_server_environment": {"STAND_IN_HEALTH": "never"}}),
    "crash": ("main", {"vllm_server_service_name": "vllm-crash", "vllm_server_port": 8104, "vllm_server_health_timeout": 600,
                       "vllm_server_restart_sec": 1, "vllm_server_environment": {"STAND_IN_HEALTH": "crash"}}),
    "open": ("main", {"vllm_server_service_name": "vllm-open", "vllm_server_port": 8105, "vllm_server_host": "0.0.0.0"}),
    "badargs": ("main", {"vllm_server_service_name": "vllm-badargs", "vllm_server_port": 8106,
                         "vllm_server_args": {"port": 9000, "bad name!": 1}}),
    "badenv": ("main", {"vllm_server_service_name": "vllm-badenv", "vllm_server_port": 8107,
                        "vllm_server_environment": {"HF_HOME": "/x", "OK_NAME": "a\nb"}}),
    "badunit": ("main", {"vllm_server_service_name": "vllm-badunit", "vllm_server_port": 8108, "vllm_server_restart_sec": -1}),
    "report-vllm": ("report", {"vllm_server_model": "Qwen/Qwen3.5-27B"}),
    "report-gptoss": ("report", {"vllm_server_model": "openai/gpt-oss-120b", "vllm_server_service_name": "vllm-gptoss"}),
}
COMMON = {"vllm_server_model": "test/model", "vllm_server_health_timeout": 30, "vllm_server_health_interval": 1}

PLAY = """
- name: "Case {name}"
  hosts: all
  gather_facts: false
  become: true
  tasks:
    - name: Run vllm_server
      block:
        - name: Run the role
          ansible.builtin.include_role:
            name: dgxspark.vllm.vllm_server
            tasks_from: {entry}
          vars: {vars}
      rescue:
        - name: Record the failure
          ansible.builtin.copy:
            dest: {out}/{name}.failure.json
            content: "{{{{ {{'task': ansible_failed_task.name, 'msg': ansible_failed_result.msg,
                         'stdout': ansible_failed_result.stdout | default('')}} | to_json }}}}"
            mode: "0644"
          delegate_to: localhost
          become: false
    - name: Record the report
      ansible.builtin.copy:
        dest: {out}/{name}.report.json
        content: "{{{{ vllm_server_report | default({{}}) | to_json }}}}"
        mode: "0644"
      delegate_to: localhost
      become: false
"""


@pytest.fixture(scope="module")
def results(host, tmp_path_factory):
    """Run every case in one ansible-playbook run; yields name -> {"failure": ..., "report": ...}."""
    out = tmp_path_factory.mktemp("cases")
    plays = "".join(PLAY.format(name=name, entry=entry, vars=json.dumps(dict(COMMON, **role_vars)), out=out)
                    for name, (entry, role_vars) in CASES.items())
    playbook = out / "cases.yml"
    playbook.write_text("---" + plays)
    env = dict(os.environ, ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(playbook)],
                          capture_output=True, text=True, env=env, check=False, timeout=900)
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        loaded = {}
        for name in CASES:
            failure, report = out / (name + ".failure.json"), out / (name + ".report.json")
            loaded[name] = {"failure": json.loads(failure.read_text()) if failure.exists() else None,
                            "report": json.loads(report.read_text()) if report.exists() else None}
        yield loaded
    finally:
        for name, (_entry, role_vars) in CASES.items():
            service = role_vars.get("vllm_server_service_name")
            if name.startswith("report") or not service:
                continue
            host.run("systemctl disable --now %s.service", service)
            host.run("rm -f /etc/systemd/system/%s.service /etc/dgxspark/%s.env", service, service)
        host.run("systemctl daemon-reload; systemctl reset-failed")


def failure_of(results, name):
    failure = results[name]["failure"]
    assert failure is not None, "case %s: the role did not fail" % name
    return failure


def test_wrong_answer_fails_and_quotes_the_answer(results):
    failure = failure_of(results, "wrong")
    assert failure["task"] == "Assert that the answer contains the known answer"
    msg = failure["msg"]
    assert msg.startswith("%s: smoke test of vllm-wrong.service failed: wrong answer from http://127.0.0.1:8102" % HOST)
    assert "asked 'What is the capital of France? Answer with one word.'" in msg
    assert "expected an answer containing 'Paris', got '!!!!!!!!" in msg


def test_never_healthy_fails_with_the_last_journal_lines(results):
    failure = failure_of(results, "sick")
    assert failure["task"] == "Assert that the service answered /health"
    msg = failure["msg"]
    assert msg.startswith("%s: vllm-sick.service did not become healthy: http://127.0.0.1:8103/health did not answer 200" % HOST)
    assert "last: HTTP 503" in msg
    assert "within vllm_server_health_timeout=4 s" in msg
    assert "Last 40 lines of its journal:" in msg
    # The journal itself: the server's own lines, and its 503 answers to the role's polling.
    assert "Application startup complete." in msg
    assert '"GET /health HTTP/1.1" 503' in msg


def test_crashing_server_ends_the_wait_early(results):
    """The server dies during "model load": the role stops waiting at the first restart, not after 600 s."""
    failure = failure_of(results, "crash")
    msg = failure["msg"]
    assert "vllm-crash.service did not become healthy" in msg
    assert "the unit restarted 1 time(s) while loading (it crashed; allowed: 0)" in msg or "the unit is failed" in msg
    assert "EngineCore failed to start (STAND_IN_HEALTH=crash)." in msg


def test_public_address_without_api_key_is_refused_before_any_change(host, results):
    failure = failure_of(results, "open")
    assert failure["task"] == "Refuse to listen beyond loopback without an API key"
    assert failure["msg"].startswith(
        "%s: refusing to listen on vllm_server_host=0.0.0.0 without an API key; any address other than "
        "127.0.0.1, ::1, localhost needs vllm_server_api_key" % HOST)
    assert not host.file("/etc/systemd/system/vllm-open.service").exists
    assert not host.file("/etc/dgxspark/vllm-open.env").exists


def test_options_the_role_owns_and_bad_names_are_refused(host, results):
    failure = failure_of(results, "badargs")
    assert failure["task"] == "Assert the option names in vllm_server_args"
    assert "invalid option names bad name!" in failure["msg"]
    assert "options the role sets itself: port" in failure["msg"]
    assert not host.file("/etc/systemd/system/vllm-badargs.service").exists


def test_environment_the_role_owns_and_line_breaks_are_refused(host, results):
    failure = failure_of(results, "badenv")
    assert failure["task"] == "Assert the names in vllm_server_environment"
    assert "values with a line break in OK_NAME" in failure["msg"]
    assert "variables the role writes itself: HF_HOME (set vllm_server_hf_home)" in failure["msg"]
    assert not host.file("/etc/dgxspark/vllm-badenv.env").exists


def test_unit_that_systemd_rejects_is_not_installed(host, results):
    """RestartSec=-1 passes the role's own checks; systemd-analyze verify catches it before install."""
    failure = failure_of(results, "badunit")
    assert failure["task"] == "Write the systemd unit, validated with systemd-analyze verify first"
    assert failure["msg"] == "failed to validate"
    assert "/vllm-badunit.service:" in failure["stdout"] and "Failed to parse sec value, ignoring: -1" in failure["stdout"]
    assert not host.file("/etc/systemd/system/vllm-badunit.service").exists
    assert not host.file("/etc/dgxspark/vllm-badunit.env").exists


def test_report_reads_backend_and_fa_version_from_the_journal(results):
    """vllm: --attention-backend flash_attn gives vLLM's "Using AttentionBackendEnum.FLASH_ATTN backend." line;
    vllm-gptoss: vLLM's own choice ("Using TRITON_ATTN attention backend out of potential backends") and no FA line."""
    assert results["report-vllm"]["failure"] is None
    report = results["report-vllm"]["report"]
    assert report["service"] == "vllm.service" and report["active_state"] == "active"
    assert report["attention_backends"] == ["FLASH_ATTN"] and report["fa_versions"] == ["2"]
    assert results["report-gptoss"]["failure"] is None
    report = results["report-gptoss"]["report"]
    assert report["attention_backend"] == "TRITON_ATTN" and report["fa_version"] == "unknown"


def check_mode_run(*extra):
    env = dict(os.environ, ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(SCENARIO / "converge.yml"),
                           "--check", *extra], capture_output=True, text=True, env=env, check=False, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recap = [line for line in proc.stdout.splitlines() if line.startswith(HOST + " ") and "changed=" in line]
    assert recap and "failed=0" in recap[-1], proc.stdout
    return recap[-1]


def test_check_mode_reports_changes_and_makes_none(host):
    """Check mode on the converged host with a changed setting: the env files and the restarts are reported
    as changed, but no file changes and no server restarts. (Unchanged settings: the idempotence step.)"""
    files = ["/etc/systemd/system/vllm.service", "/etc/dgxspark/vllm.env", "/etc/dgxspark/vllm-gptoss.env"]
    before = {path: host.file(path).sha256sum for path in files}
    started = host.check_output("systemctl show --property=ActiveEnterTimestamp --value vllm.service")
    recap = check_mode_run("-e", '{"vllm_server_logging_level": "DEBUG"}')
    assert "changed=0" not in recap, recap
    assert {path: host.file(path).sha256sum for path in files} == before
    assert host.check_output("systemctl show --property=ActiveEnterTimestamp --value vllm.service") == started
