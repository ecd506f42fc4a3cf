"""Shared helpers of the fa2_native tests: cached tool venvs under .cache/venvs, the test project.

Imported by tests that put tests/ on sys.path. Each venv is created once and reused while its
package list is unchanged (a stamp file holds the list).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "fa2_test_project"
VENVS = ROOT / ".cache" / "venvs"
BUILDTOOLS = ["cmake>=3.26,<5", "ninja", "nvidia-cuda-cuobjdump"]
TORCH_CPU = ["torch==2.13.0"]


def cache_venv(name, packages):
    """A venv at .cache/venvs/<name> holding packages (pip, from PyPI or the local find-links).

    A lock file serialises test processes that ask for the same venv at once (ansible-test units runs
    tests in parallel workers).
    """
    venv = VENVS / name
    stamp = venv / ".dgxspark-packages.json"
    want = json.dumps(sorted(packages))
    VENVS.mkdir(parents=True, exist_ok=True)
    with open(VENVS / (name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file() and stamp.read_text() == want and (venv / "bin" / "python").exists():
            return venv
        if venv.exists():
            shutil.rmtree(venv)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"] + packages,
                       check=True)
        stamp.write_text(want)
    return venv


def buildtools():
    """cmake (>= 3.26), ninja and cuobjdump from PyPI: {'bin', 'cmake', 'ninja', 'cuobjdump'}."""
    venv = cache_venv("fa2-buildtools", BUILDTOOLS)
    cuobjdump = next(venv.glob("lib/python*/site-packages/nvidia/cu13/bin/cuobjdump"))
    return {"bin": venv / "bin", "cmake": venv / "bin" / "cmake", "ninja": venv / "bin" / "ninja",
            "cuobjdump": cuobjdump, "python": venv / "bin" / "python"}


def nvcc():
    """The nvcc to build with: DGX_NVCC when set (a path; the tests' way to name another toolkit, or none),
    else nvcc on PATH, else /usr/local/cuda/bin/nvcc. None when there is none."""
    if "DGX_NVCC" in os.environ:
        candidates = [os.environ["DGX_NVCC"]]
    else:
        candidates = [shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def nvcc_or_skip_module():
    """Module-level guard of test files that compile with nvcc; returns nvcc's path.

    Without nvcc the module is skipped where someone runs pytest by hand, but under CI=true a missing toolkit
    fails the run: a lost toolkit must not turn CI green with skips. scripts/test.sh installs the toolkit
    (scripts/lib.sh, ensure_cuda_toolkit) before any test runs.
    """
    import pytest

    path = nvcc()
    if path:
        return path
    msg = ("no nvcc (CUDA 13.0): none at DGX_NVCC, on PATH or at /usr/local/cuda/bin/nvcc. scripts/test.sh "
           "installs one in /usr/local/cuda-13.0 (from NVIDIA's PyPI wheels when it is missing)")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("CI=true: " + msg, pytrace=False)
    pytest.skip(msg, allow_module_level=True)
    return None


def cuobjdump_listing(cuobjdump, path):
    """{'sass': [...sm_XX], 'ptx': [...sm_XX]} as cuobjdump lists them."""
    found = {"sass": set(), "ptx": set()}
    for flag, kind in (("--list-elf", "sass"), ("--list-ptx", "ptx")):
        out = subprocess.run([str(cuobjdump), flag, str(path)], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            for part in line.replace(".", " ").split():
                if part.startswith("sm_"):
                    found[kind].add(part)
    return {k: sorted(v) for k, v in found.items()}
