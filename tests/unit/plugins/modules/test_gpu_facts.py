"""Unit tests of the gpu_facts module, run as Ansible runs it (a subprocess with JSON arguments).

nvidia-smi and nvcc are stand-ins: small shell scripts written by each test into a temporary
PATH, printing canned output (the real H200 line from FACTS.md, a GB10-like line, a driver failure).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.dgxspark.vllm.tests.unit.module_env import module_pythonpath

ROOT = Path(__file__).resolve().parents[4]
MODULE = ROOT / "plugins" / "modules" / "gpu_facts.py"

H200_LINE = "NVIDIA H200, 9.0, 580.159.04, 143771, GPU-251d5ba9-6f33-8bf4-9283-451ed75b3430"
NVCC_OUT = "Cuda compilation tools, release 13.0, V13.0.88"
DRIVER_FAIL = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running."


def _stand_in(bindir: Path, name: str, stdout: str, rc: int = 0):
    path = bindir / name
    path.write_text("#!/bin/sh\ncat <<'__EOF__'\n%s\n__EOF__\nexit %d\n" % (stdout, rc))
    path.chmod(0o755)


def run_module(tmp_path, args, tools):
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for name, (out, rc) in tools.items():
        _stand_in(bindir, name, out, rc)
    argsfile = tmp_path / "args.json"
    argsfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = {"PATH": str(bindir) + ":/bin", "PYTHONPATH": module_pythonpath()}
    proc = subprocess.run([sys.executable, str(MODULE), str(argsfile)], capture_output=True, text=True, env=env, check=False)
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def no_cuda(tmp_path):
    return {"cuda_home": str(tmp_path / "no-cuda")}


def test_real_h200_and_toolkit(tmp_path, no_cuda):
    result = run_module(tmp_path, no_cuda, {"nvidia-smi": (H200_LINE, 0), "nvcc": (NVCC_OUT, 0)})
    facts = result["ansible_facts"]["dgxspark_gpu"]
    assert result["changed"] is False
    assert facts["present"] and facts["count"] == 1
    assert facts["gpus"][0]["compute_capability"] == "9.0"
    assert facts["gpus"][0]["memory_total_mib"] == 143771
    assert facts["cuda_toolkit"]["found"] and facts["cuda_toolkit"]["version"] == "13.0"


def test_toolkit_found_in_cuda_home_when_not_on_path(tmp_path):
    home = tmp_path / "cuda"
    (home / "bin").mkdir(parents=True)
    _stand_in(home / "bin", "nvcc", "Cuda compilation tools, release 12.8, V12.8.61")
    result = run_module(tmp_path, {"cuda_home": str(home)}, {"nvidia-smi": (H200_LINE, 0)})
    toolkit = result["ansible_facts"]["dgxspark_gpu"]["cuda_toolkit"]
    assert toolkit["version"] == "12.8"
    assert toolkit["nvcc"] == str(home / "bin" / "nvcc")


def test_no_nvidia_smi_is_not_an_error(tmp_path, no_cuda):
    result = run_module(tmp_path, no_cuda, {})
    facts = result["ansible_facts"]["dgxspark_gpu"]
    assert not result.get("failed")
    assert facts["present"] is False and facts["count"] == 0
    assert "nvidia-smi not found" in facts["reason"]
    assert facts["cuda_toolkit"]["found"] is False


def test_broken_driver_is_no_usable_gpu_quoting_nvidia_smi(tmp_path, no_cuda):
    # Not a failure: the caller decides (preflight fails, or warns with dgxspark_require_gpu=false).
    result = run_module(tmp_path, no_cuda, {"nvidia-smi": (DRIVER_FAIL, 9)})
    facts = result["ansible_facts"]["dgxspark_gpu"]
    assert not result.get("failed"), result
    assert facts["present"] is False and facts["count"] == 0 and facts["nvidia_smi_rc"] == 9
    assert "couldn't communicate with the NVIDIA driver" in facts["reason"]
    assert facts["reason"].startswith(str(tmp_path / "bin" / "nvidia-smi") + " failed (rc=9): ")


def test_garbage_fails_quoting_the_line(tmp_path, no_cuda):
    result = run_module(tmp_path, no_cuda, {"nvidia-smi": ("this is not csv at all", 0)})
    assert result["failed"] is True
    assert "'this is not csv at all'" in result["msg"]


def test_check_mode_reports_facts_and_no_change(tmp_path, no_cuda):
    args = dict(no_cuda, _ansible_check_mode=True)
    result = run_module(tmp_path, args, {"nvidia-smi": (H200_LINE, 0)})
    assert result["changed"] is False
    assert result["ansible_facts"]["dgxspark_gpu"]["count"] == 1
