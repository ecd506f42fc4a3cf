"""Verify the default scenario: all of site.yml converged in a GPU-less systemd container.

The served model is a STAND-IN OpenAI server (tests/fixtures/openai_stand_in.py); the FA2 source is the
test CUDA project; the FA4 kernel directory is a stand-in. Everything else is the real thing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / ".cache" / "collections"))

from ansible_collections.dgxspark.vllm.plugins.module_utils import fatbin  # noqa: E402

VENV = "/opt/vllm/venv"
SITE = VENV + "/lib/python3.11/site-packages"
LIB = SITE + "/vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so"


def test_systemd_is_pid_1(host):
    assert host.file("/proc/1/comm").content_string.strip() == "systemd"


def test_uv_and_the_venv_with_the_real_vllm_wheel(host):
    assert host.run("/usr/local/bin/uv --version").stdout.startswith("uv 0.13.8")
    python = host.file(VENV + "/bin/python")
    assert python.exists
    assert host.file(VENV).user == "vllm"
    out = host.check_output(VENV + "/bin/python -c 'from importlib.metadata import version; print(version(\"vllm\"))'")
    assert out.strip() == "0.33.0"


def test_cuda_env_file_has_the_fallback_arch_and_toolkit_paths(host):
    lines = host.file("/etc/dgxspark/cuda.env").content_string.splitlines()
    assert "TORCH_CUDA_ARCH_LIST=12.1a" in lines
    assert "TRITON_PTXAS_PATH=/usr/local/cuda/bin/ptxas" in lines


def _read_from_container(path, tmp_path):
    local = tmp_path / path.rsplit("/", 1)[-1]
    subprocess.run(["docker", "cp", "dgxspark-default:" + path, str(local)], check=True)
    return fatbin.read_fatbin(str(local))


def test_fa2_library_is_the_native_build_with_a_manifest_and_the_stock_backup(host, tmp_path):
    manifest = json.loads(host.file(LIB + ".dgxspark.json").content_string)
    assert host.file(LIB + ".stock").exists
    sha = host.check_output("sha256sum " + LIB).split()[0]
    assert manifest["sha256"] == sha
    info = _read_from_container(LIB, tmp_path)
    assert info["sass_archs"] == ["sm_121"], info["sass_archs"]
    assert info["ptx_archs"] == []
    # vLLM 0.33.0's real library, kept beside it: sm_80 SASS + compute_80 PTX only (FACTS.md 2).
    stock = _read_from_container(LIB + ".stock", tmp_path)
    assert stock["sass_archs"] == ["sm_80"] and stock["ptx_archs"] == ["sm_80"]


def test_fa4_shim_installed_in_the_real_site_packages(host):
    assert host.file(SITE + "/zzz_dgxspark_fa4_sm120.pth").exists
    assert host.file(SITE + "/dgxspark_fa4_sm120_shim.py").exists


def test_service_runs_and_answers(host):
    assert host.service("vllm").is_running
    assert host.service("vllm").is_enabled
    health = host.run("python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/health').status)\"")
    assert health.stdout.strip() == "200"
