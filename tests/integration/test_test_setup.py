"""What scripts/test.sh does for a machine that lacks something the tests need (scripts/lib.sh).

- ensure_cuda_toolkit assembles a CUDA 13.0 toolkit from NVIDIA's PyPI wheels when none is installed; the one it
  builds here (in a temporary directory, not /usr/local) compiles for sm_121, and a machine that cannot get the
  wheels stops at once with a message;
- ensure_torch_cpu_wheel stops at once, naming the wheel and where to get it, when neither pip's configuration
  nor PyTorch's CPU index provides it;
- the nvcc guard of the test files that compile CUDA code skips when someone runs pytest by hand without a
  toolkit, but fails under CI=true.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# pip without this machine's configuration (its local wheel folders and indexes): what a new machine has.
BARE_PIP = {"PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": "", "PIP_EXTRA_INDEX_URL": ""}


def lib_sh(script, env=None, timeout=900):
    full = dict(os.environ, DGX_VENV=str(BIN.parent), **(env or {}))
    proc = subprocess.run(["bash", "-c", 'source "%s/scripts/lib.sh"; %s' % (ROOT, script)], cwd=ROOT, env=full,
                          capture_output=True, text=True, check=False, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def test_cuda_toolkit_from_pypi_wheels_compiles_for_sm_121(tmp_path):
    home = tmp_path / "cuda-13.0"
    rc, out = lib_sh("ensure_cuda_toolkit", {"DGX_CUDA_HOME": str(home)})
    assert rc == 0, out
    assert "assembling a CUDA 13.0 toolkit in %s from NVIDIA's PyPI wheels" % home in out
    version = subprocess.run([str(home / "bin" / "nvcc"), "--version"], capture_output=True, text=True, check=True)
    assert "release 13.0," in version.stdout
    (tmp_path / "k.cu").write_text("#include <cuda_runtime.h>\n__global__ void k(float *x) { x[0] = 1.0f; }\n"
                                   "int main() { return cudaGetLastError() == cudaSuccess ? 0 : 1; }\n")
    build = subprocess.run([str(home / "bin" / "nvcc"), "-gencode", "arch=compute_121,code=sm_121",
                            "-gencode", "arch=compute_80,code=compute_80", "-o", str(tmp_path / "k"),
                            str(tmp_path / "k.cu")], capture_output=True, text=True, check=False)
    assert build.returncode == 0, build.stdout + build.stderr
    # A second call finds it and does nothing.
    rc, out = lib_sh("ensure_cuda_toolkit", {"DGX_CUDA_HOME": str(home)})
    assert rc == 0 and "assembling" not in out, out


def test_cuda_toolkit_missing_and_not_installable_stops_at_once(tmp_path):
    env = dict(BARE_PIP, DGX_CUDA_HOME=str(tmp_path / "cuda-13.0"), PIP_INDEX_URL="http://127.0.0.1:9/simple",
               PIP_RETRIES="0", PIP_TIMEOUT="5", PIP_DEFAULT_TIMEOUT="5")
    rc, out = lib_sh("ensure_cuda_toolkit; echo REACHED", env)
    assert rc == 1 and "REACHED" not in out, out
    assert "could not install nvidia-cuda-nvcc==13.0.88" in out and "install CUDA 13.0 into %s" % env["DGX_CUDA_HOME"] in out
    assert not (tmp_path / "cuda-13.0").exists()


def test_broken_cuda_toolkit_is_not_replaced(tmp_path):
    home = tmp_path / "cuda-13.0"
    (home / "bin").mkdir(parents=True)
    rc, out = lib_sh("ensure_cuda_toolkit; echo REACHED", {"DGX_CUDA_HOME": str(home)})
    assert rc == 1 and "REACHED" not in out, out
    assert "%s exists but %s/bin/nvcc is not a working nvcc 13.0" % (home, home) in out


def test_torch_cpu_wheel_missing_stops_at_once_naming_it(tmp_path):
    env = dict(BARE_PIP, DGX_TORCH_CPU_DIR=str(tmp_path / "torch-cpu"), DGX_TORCH_CPU_INDEX="http://127.0.0.1:9/simple")
    rc, out = lib_sh("ensure_torch_cpu_wheel; echo REACHED", env)
    assert rc == 1 and "REACHED" not in out, out
    assert "the wheel torch==2.13.0+cpu (CPython 3.11, " in out
    assert "it is not on PyPI" in out and "--index-url https://download.pytorch.org/whl/cpu torch==2.13.0+cpu" in out
    assert "put it into %s" % env["DGX_TORCH_CPU_DIR"] in out


def test_torch_cpu_wheel_already_kept_is_used(tmp_path):
    keep = tmp_path / "torch-cpu"
    keep.mkdir()
    # Not a usable wheel, and not meant to be one: the step only looks for the file name and adds the folder.
    (keep / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    rc, out = lib_sh('ensure_torch_cpu_wheel; echo "FIND_LINKS=$PIP_FIND_LINKS"',
                     dict(BARE_PIP, DGX_TORCH_CPU_DIR=str(keep)))
    assert rc == 0 and out.strip().endswith("FIND_LINKS=%s" % keep), out


def collect_fa2_role_tests(ci):
    full = {k: v for k, v in os.environ.items() if k != "CI"}
    full["DGX_NVCC"] = "/nonexistent/nvcc"
    if ci:
        full["CI"] = "true"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q", "-rs",
                           "tests/integration/test_fa2_native_role.py"], cwd=ROOT, env=full, capture_output=True,
                          text=True, check=False, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def test_missing_nvcc_skips_by_hand_but_fails_under_ci():
    rc, out = collect_fa2_role_tests(ci=False)
    assert rc in (0, 5) and "SKIPPED" in out and "no nvcc (CUDA 13.0)" in out, out
    rc, out = collect_fa2_role_tests(ci=True)
    assert rc not in (0, 5) and "CI=true: no nvcc (CUDA 13.0)" in out, out
