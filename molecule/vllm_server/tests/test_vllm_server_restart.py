"""A changed setting restarts the REAL vLLM server and the role waits for it: /health, then the smoke question,
whose expected answer is the one transformers gave (tests/fixtures/tiny_model.py). (That a run with unchanged
settings changes and restarts nothing is the scenario's idempotence step.)

This file runs after test_vllm_server.py and test_vllm_server_failures.py (pytest takes them in name order), so
that the restart does not race the other tests' requests; it leaves the scenario's services on the new setting.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

HOST = "dgxspark-vllm_server"
SCENARIO = Path(__file__).resolve().parents[1]
REFERENCE = json.loads((SCENARIO.parents[1] / ".cache" / "tiny-model" / "current" / "reference.json").read_text())
CHANGE = '{"vllm_server_logging_level": "DEBUG"}'


def converge(*extra):
    env = dict(os.environ, ANSIBLE_NOCOLOR="1")
    # -v: the asserts' success messages (the wait and the answer) are in the output.
    proc = subprocess.run(["ansible-playbook", "-v", "-i", os.environ["MOLECULE_INVENTORY_FILE"],
                           str(SCENARIO / "converge.yml"), *extra], capture_output=True, text=True, env=env, check=False, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    recap = [line for line in proc.stdout.splitlines() if line.startswith(HOST + " ") and "changed=" in line]
    assert recap and "failed=0" in recap[-1], proc.stdout[-3000:]
    return proc.stdout, recap[-1]


def state(host):
    pid = int(host.check_output("systemctl show --property=MainPID --value vllm.service"))
    env = dict(line.split("=", 1) for line in host.check_output("tr '\\0' '\\n' < /proc/%s/environ", str(pid)).split("\n")
               if "=" in line)
    return pid, env


def test_a_changed_setting_restarts_the_real_server_and_the_role_waits_until_it_answers_right(host):
    pid_before, env_before = state(host)
    assert env_before["VLLM_LOGGING_LEVEL"] == "INFO"
    out, recap = converge("-e", CHANGE)
    pid_after, env_after = state(host)
    assert pid_after != pid_before and env_after["VLLM_LOGGING_LEVEL"] == "DEBUG"
    assert "changed=0" not in recap
    # The handlers of this run: the restart, /health, then the smoke question answered with the reference text.
    assert "RUNNING HANDLER [dgxspark.vllm.vllm_server : Restart the vLLM service]" in out
    assert "%s: vllm.service healthy after" % HOST in out
    assert "answered %r to 'What is the capital of France? Answer with one word.'" % REFERENCE["answer"] in out
    assert "attention backend not reported, FlashAttention version not reported" in out
