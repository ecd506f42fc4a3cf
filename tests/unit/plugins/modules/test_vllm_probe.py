"""Unit tests of the vllm_probe module, run as Ansible runs it (a subprocess with JSON arguments).

The server is tests/fixtures/openai_stand_in.py, a STAND-IN for `vllm serve` (a real vLLM needs a GPU):
a small OpenAI-compatible HTTP server started on a free local port, with knobs that make it answer
wrongly, answer nothing, never become healthy, or demand an API key.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ansible_collections.dgxspark.vllm.tests.unit.module_env import module_pythonpath

ROOT = Path(__file__).resolve().parents[4]
MODULE = ROOT / "plugins" / "modules" / "vllm_probe.py"
STAND_IN = ROOT / "tests" / "fixtures" / "openai_stand_in.py"
SECRET = "sk-test-0123456789abcdef"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def stand_in(tmp_path):
    """Start the stand-in with the given knobs; yields a function returning its base URL."""
    procs = []

    def start(*extra, env=None, wait=True):
        port = free_port()
        full_env = dict(os.environ, **(env or {}))
        log = (tmp_path / ("stand-in-%d.log" % port)).open("w")
        proc = subprocess.Popen([sys.executable, str(STAND_IN), "serve", "test/model", "--host", "127.0.0.1",
                                 "--port", str(port), *extra], env=full_env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        url = "http://127.0.0.1:%d" % port
        if wait:
            for _attempt in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
        return url

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def fake_systemctl(tmp_path, states):
    """A systemctl stand-in printing the given `systemctl show` answers in turn (the last one repeats)."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for index, state in enumerate(states):
        (tmp_path / ("state-%d" % index)).write_text("".join("%s=%s\n" % kv for kv in state.items()))
    script = bindir / "systemctl"
    script.write_text("#!/bin/sh\n"
                      "n=$(cat %(d)s/count 2>/dev/null || echo 0)\n"
                      "f=%(d)s/state-$n; [ -f \"$f\" ] || f=%(d)s/state-%(last)d\n"
                      "echo $((n + 1)) > %(d)s/count\n"
                      "echo \"$*\" >> %(d)s/calls\n"
                      "cat \"$f\"\n" % {"d": tmp_path, "last": len(states) - 1})
    script.chmod(0o755)
    return bindir


def run_module(tmp_path, args, check_mode=False, path="/usr/bin:/bin"):
    argsfile = tmp_path / "args.json"
    payload = dict(args)
    if check_mode:
        payload["_ansible_check_mode"] = True
    argsfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": payload}))
    env = {"PATH": path, "PYTHONPATH": module_pythonpath()}
    proc = subprocess.run([sys.executable, str(MODULE), str(argsfile)], capture_output=True, text=True, env=env,
                          check=False, timeout=120)
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_healthy_server_answers_the_known_question(tmp_path, stand_in):
    url = stand_in()
    result = run_module(tmp_path, {"url": url, "smoke": True, "model": "test/model"})
    assert result["changed"] is False
    assert result["healthy"] is True and result["health_status"] == 200
    assert result["passed"] is True
    assert result["smoke"]["passed"] is True
    assert "Paris" in result["smoke"]["answer"]
    assert result["smoke"]["http_status"] == 200
    assert isinstance(result["smoke"]["latency_ms"], float) and result["smoke"]["latency_ms"] >= 0
    assert result["smoke"]["finish_reason"] == "stop"


def test_check_mode_gives_the_same_read_only_answer(tmp_path, stand_in):
    url = stand_in()
    result = run_module(tmp_path, {"url": url + "/", "smoke": True, "model": "test/model"}, check_mode=True)
    assert result["changed"] is False and result["passed"] is True
    assert result["url"] == url


def test_wrong_answer_is_reported_and_quoted(tmp_path, stand_in):
    url = stand_in(env={"STAND_IN_ANSWER": "wrong"})
    result = run_module(tmp_path, {"url": url, "smoke": True, "model": "test/model"})
    assert result["healthy"] is True
    assert result["passed"] is False and result["smoke"]["passed"] is False
    assert "!!!!" in result["smoke"]["answer"]
    assert result["msg"].startswith("wrong answer from %s" % url)
    assert "expected an answer containing 'Paris'" in result["msg"]
    assert "got '!!!!" in result["msg"]


def test_other_question_and_expected_answer(tmp_path, stand_in):
    url = stand_in()
    result = run_module(tmp_path, {"url": url, "smoke": True, "model": "test/model",
                                   "question": "What is 2 + 2?", "expected": "4"})
    assert result["passed"] is True
    result = run_module(tmp_path, {"url": url, "smoke": True, "model": "test/model",
                                   "question": "What is 2 + 2?", "expected": "five"})
    assert result["passed"] is False and "'five'" in result["msg"]


def test_empty_answer_is_a_failure_with_a_reason(tmp_path, stand_in):
    url = stand_in(env={"STAND_IN_ANSWER": "empty"})
    result = run_module(tmp_path, {"url": url, "smoke": True, "model": "test/model"})
    assert result["passed"] is False
    assert "content is empty (finish_reason=stop)" in result["smoke"]["error"]


def test_never_healthy_times_out_with_the_last_status(tmp_path, stand_in):
    url = stand_in(env={"STAND_IN_HEALTH": "never"})
    result = run_module(tmp_path, {"url": url, "smoke": True, "model": "test/model", "wait_timeout": 2, "wait_interval": 0.5})
    assert result["healthy"] is False and result["passed"] is False
    assert result["health_status"] == 503
    assert result["smoke"]["ran"] is False
    assert result["msg"].startswith("%s/health did not answer 200 (waited " % url)
    assert result["msg"].endswith(" of 2 s; last: HTTP 503)")
    assert result["unit_state"] is None


def test_stops_waiting_when_the_unit_has_failed(tmp_path):
    """Nothing listens and systemctl (a stand-in) says the unit failed: the wait ends at once, not after 600 s."""
    bindir = fake_systemctl(tmp_path, [{"ActiveState": "activating", "SubState": "start", "NRestarts": "0"},
                                       {"ActiveState": "failed", "SubState": "failed", "NRestarts": "0"}])
    url = "http://127.0.0.1:%d" % free_port()
    result = run_module(tmp_path, {"url": url, "wait_timeout": 600, "wait_interval": 0.1, "systemd_unit": "vllm.service"},
                        path="%s:/usr/bin:/bin" % bindir)
    assert result["healthy"] is False
    assert "the unit is failed (failed)" in result["health_error"]
    assert result["unit_state"]["ActiveState"] == "failed"
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0] == "show --property=ActiveState,SubState,NRestarts vllm.service" and len(calls) == 2


def test_stops_waiting_when_the_unit_keeps_crashing(tmp_path):
    bindir = fake_systemctl(tmp_path, [{"ActiveState": "activating", "SubState": "start", "NRestarts": "3"},
                                       {"ActiveState": "activating", "SubState": "auto-restart", "NRestarts": "3"},
                                       {"ActiveState": "activating", "SubState": "start", "NRestarts": "4"}])
    url = "http://127.0.0.1:%d" % free_port()
    args = {"url": url, "wait_timeout": 600, "wait_interval": 0.1, "systemd_unit": "vllm.service"}
    result = run_module(tmp_path, args, path="%s:/usr/bin:/bin" % bindir)
    assert result["healthy"] is False
    assert "the unit restarted 1 time(s) while loading (it crashed; allowed: 0)" in result["health_error"]


def test_nothing_listening(tmp_path):
    url = "http://127.0.0.1:%d" % free_port()
    result = run_module(tmp_path, {"url": url})
    assert result["healthy"] is False and result["health_status"] is None
    assert "Connection refused" in result["health_error"]


def test_waits_for_a_slow_start(tmp_path, stand_in):
    url = stand_in(env={"STAND_IN_STARTUP_DELAY": "1.5"}, wait=False)
    once = run_module(tmp_path, {"url": url})
    assert once["healthy"] is False
    waited = run_module(tmp_path, {"url": url, "wait_timeout": 60, "wait_interval": 0.3, "smoke": True, "model": "test/model"})
    assert waited["healthy"] is True and waited["passed"] is True


def test_api_key_is_required_and_never_echoed(tmp_path, stand_in):
    url = stand_in(env={"VLLM_API_KEY": SECRET})
    without = run_module(tmp_path, {"url": url, "smoke": True, "model": "test/model"})
    assert without["healthy"] is True  # /health is open, as in vLLM
    assert without["passed"] is False and without["smoke"]["http_status"] == 401
    assert "Unauthorized" in without["smoke"]["error"]
    with_key = run_module(tmp_path, {"url": url, "smoke": True, "model": "test/model", "api_key": SECRET})
    assert with_key["passed"] is True
    assert SECRET not in json.dumps(with_key)


def test_unknown_model_name(tmp_path, stand_in):
    url = stand_in("--served-model-name", "served")
    result = run_module(tmp_path, {"url": url, "smoke": True, "model": "test/model"})
    assert result["passed"] is False and result["smoke"]["http_status"] == 404
    assert "The model `test/model` does not exist." in result["msg"]
    assert run_module(tmp_path, {"url": url, "smoke": True, "model": "served"})["passed"] is True


@pytest.mark.parametrize("args, message", [
    ({"url": "127.0.0.1:8000"}, "url='127.0.0.1:8000': expected an http:// or https:// base URL"),
    ({"url": "http://127.0.0.1:1", "wait_timeout": -1}, "wait_timeout=-1"),
    ({"url": "http://127.0.0.1:1", "smoke": True}, "smoke is True but all of the following are missing: model"),
    ({"url": "http://127.0.0.1:1", "expected": " "}, "expected=' ': the known answer must not be empty"),
])
def test_bad_options_fail_with_the_value(tmp_path, args, message):
    result = run_module(tmp_path, args)
    assert result.get("failed") is True
    assert message in result["msg"]
