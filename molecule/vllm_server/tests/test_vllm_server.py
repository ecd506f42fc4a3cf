"""Verify the vllm_server scenario: two services converged from the two seed examples.

The server behind them is tests/fixtures/openai_stand_in.py, a STAND-IN for `vllm serve` (no GPU
in the container, so no real vLLM). What is real: systemd running the unit with its hardening, the
environment files, the command line systemd builds from the unit, the API key check and the handlers.
"""

from __future__ import annotations

import hashlib
import json

import pytest

API_KEY = "molecule-test-key-0123"
HF_TOKEN = "hf_molecule_token_0123"


def http(host, path, port=8000, key=None, body=None):
    """One request from inside the container; returns (status, parsed JSON body or None)."""
    script = (
        "import json, sys, urllib.request, urllib.error\n"
        "a = json.loads(sys.argv[1])\n"
        "r = urllib.request.Request(a['url'], data=None if a['body'] is None else json.dumps(a['body']).encode(),"
        " headers=dict({'Content-Type': 'application/json'}, **({'Authorization': 'Bearer ' + a['key']} if a['key'] else {})))\n"
        "try:\n    resp = urllib.request.urlopen(r, timeout=10); s, t = resp.status, resp.read()\n"
        "except urllib.error.HTTPError as e:\n    s, t = e.code, e.read()\n"
        "print(json.dumps({'status': s, 'body': t.decode()}))\n"
    )
    args = json.dumps({"url": "http://127.0.0.1:%d%s" % (port, path), "key": key, "body": body})
    out = host.check_output("python3 -c %s %s", script, args)
    result = json.loads(out)
    return result["status"], (json.loads(result["body"]) if result["body"] else None)


@pytest.fixture(scope="module")
def state(host):
    status, body = http(host, "/stand-in/state")
    assert status == 200
    return body


@pytest.fixture(scope="module")
def gptoss_state(host):
    status, body = http(host, "/stand-in/state", port=8001)
    assert status == 200
    return body


@pytest.mark.parametrize("unit", ["vllm.service", "vllm-gptoss.service"])
def test_units_installed_enabled_and_running(host, unit):
    path = host.file("/etc/systemd/system/" + unit)
    assert path.exists and path.user == "root" and path.mode == 0o644
    assert path.content_string.startswith("#\n# Ansible managed")
    service = host.service(unit)
    assert service.is_enabled
    assert service.is_running


@pytest.mark.parametrize("unit", ["vllm.service", "vllm-gptoss.service"])
def test_installed_units_pass_systemd_analyze_verify(host, unit):
    result = host.run("systemd-analyze verify /etc/systemd/system/%s", unit)
    assert result.rc == 0, result.stderr
    assert "/etc/systemd/system/%s:" % unit not in result.stderr


def test_hardening_is_in_effect(host):
    props = dict(line.split("=", 1) for line in host.check_output(
        "systemctl show vllm.service --property=NoNewPrivileges,ProtectSystem,ProtectHome,PrivateTmp,Restart,User").splitlines())
    assert props == {"NoNewPrivileges": "yes", "ProtectSystem": "full", "ProtectHome": "yes", "PrivateTmp": "yes",
                     "Restart": "on-failure", "User": "vllm"}


def test_server_runs_as_the_venv_user(host, state):
    assert state["stand_in"] is True
    assert state["user"] == host.user("vllm").uid


def test_command_line_from_the_qwen_example(state):
    argv = state["argv"]
    assert argv[:7] == ["serve", "Qwen/Qwen3.5-27B", "--host", "0.0.0.0", "--port", "8000", "--served-model-name"]
    assert argv[7] == "qwen3.5-27b"
    pairs = {"--attention-backend": "flash_attn", "--gpu-memory-utilization": "0.85", "--max-model-len": "65536",
             "--load-format": "fastsafetensors", "--max-num-batched-tokens": "32768"}
    for flag, value in pairs.items():
        assert argv[argv.index(flag) + 1] == value
    speculative = json.loads(argv[argv.index("--speculative-config") + 1])
    assert speculative == {"method": "dflash", "model": "z-lab/Qwen3.5-27B-DFlash", "num_speculative_tokens": 15}
    # true -> bare flag; false -> left out; systemd's quoting carries quotes, %, $ and backslashes intact.
    assert "--enforce-eager" in argv and argv[argv.index("--enforce-eager") + 1].startswith("--")
    assert "--disable-log-stats" not in argv
    assert argv[argv.index("--stand-in-quoting-probe") + 1] == "it's 100% \"$HOME\" \\ ok"
    # The API key is never on the command line (it comes from the env file as VLLM_API_KEY).
    assert "--api-key" not in argv and API_KEY not in " ".join(argv)


def test_environment_reaches_the_server(state):
    env = state["env"]
    assert env["FA4_SM120_SHIM"] == "1"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["HF_HOME"] == "/var/lib/vllm/huggingface"
    assert env["VLLM_LOGGING_LEVEL"] == "INFO"
    assert env["HOME"] == "/var/lib/vllm"
    assert env["XDG_CACHE_HOME"] == "/var/lib/vllm/.cache"
    # cuda_env's file (written by the real cuda_env role in prepare) is read too.
    assert env["TORCH_CUDA_ARCH_LIST"] == "12.1a"
    assert env["TRITON_PTXAS_PATH"].endswith("/bin/ptxas") and env["CUDA_HOME"]
    assert state["env_sha256"]["HF_TOKEN"] == hashlib.sha256(HF_TOKEN.encode()).hexdigest()
    assert state["env_sha256"]["VLLM_API_KEY"] == hashlib.sha256(API_KEY.encode()).hexdigest()
    assert state["api_key_from"] == "env"


def test_env_file_is_readable_by_root_and_the_service_group_only(host):
    env = host.file("/etc/dgxspark/vllm.env")
    assert env.user == "root" and env.group == "vllm" and env.mode == 0o640
    assert 'HF_TOKEN="%s"' % HF_TOKEN in env.content_string
    assert 'VLLM_API_KEY="%s"' % API_KEY in env.content_string
    assert API_KEY not in host.file("/etc/systemd/system/vllm.service").content_string
    assert HF_TOKEN not in host.file("/etc/systemd/system/vllm.service").content_string


def test_unit_reads_cuda_env_file_strictly_because_it_exists(host):
    unit = host.file("/etc/systemd/system/vllm.service").content_string
    assert "EnvironmentFile=/etc/dgxspark/cuda.env\nEnvironmentFile=/etc/dgxspark/vllm.env\n" in unit


def test_api_key_is_enforced_on_v1(host):
    assert http(host, "/health")[0] == 200
    status, body = http(host, "/v1/models")
    assert status == 401 and body == {"error": "Unauthorized"}
    status, body = http(host, "/v1/models", key=API_KEY)
    assert status == 200 and [m["id"] for m in body["data"]] == ["qwen3.5-27b"]


def test_listen_addresses(host):
    # vllm listens on all addresses (with a key); vllm-gptoss on loopback only (the default).
    assert host.socket("tcp://0.0.0.0:8000").is_listening
    assert host.socket("tcp://127.0.0.1:8001").is_listening
    assert not host.socket("tcp://0.0.0.0:8001").is_listening


def test_drop_caches_ran_as_root_before_the_start(host):
    """page_cache's real helper ran from ExecStartPre with full privileges: as root it gets as far as finding
    /proc/sys read-only in the container ("skipped", allowed by --optional); as the service user it would have
    stopped at "needs root"."""
    outcome = json.loads(host.file("/run/dgxspark/drop-caches.json").content_string)
    assert outcome["result"] == "skipped" and outcome["rc"] == 0, outcome
    assert "read-only" in outcome["reason"] and outcome["min_available_mib"] == 1024
    assert "ExecStartPre=+-/usr/local/sbin/dgxspark-drop-caches '--min-available-mib' '1024' '--optional'" in \
        host.file("/etc/systemd/system/vllm.service").content_string
    journal = host.check_output("journalctl --unit vllm.service --output cat --no-pager")
    assert "dgxspark-drop-caches: skipped (level 3)" in journal


def test_gpt_oss_example(gptoss_state, host):
    argv = gptoss_state["argv"]
    assert argv[:8] == ["serve", "openai/gpt-oss-120b", "--host", "127.0.0.1", "--port", "8001",
                        "--served-model-name", "gpt-oss-120b"]
    assert argv[argv.index("--quantization") + 1] == "mxfp4"
    assert gptoss_state["env"]["VLLM_ATTENTION_SINKS"] == "false"
    assert gptoss_state["env"]["FA4_SM120_SHIM"] == "0"
    assert gptoss_state["env_sha256"] == {"HF_TOKEN": None, "VLLM_API_KEY": None}
    assert "ExecStartPre" not in host.file("/etc/systemd/system/vllm-gptoss.service").content_string
