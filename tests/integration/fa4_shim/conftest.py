"""Fixtures for the real-vLLM tests: cached release venvs (realvllm.py) and throw-away overlays."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import realvllm  # noqa: E402


@pytest.fixture
def overlay(tmp_path):
    """overlay(version, shim=None|"dgxspark"|"seed", kernel_dir=None) -> (venv path, site-packages)."""
    count = [0]

    def make(version, shim=None, kernel_dir=None):
        count[0] += 1
        return realvllm.overlay(tmp_path / ("venv%d" % count[0]), version, shim=shim, kernel_dir=kernel_dir)

    return make


def run_check(venv, env=None):
    """Run real_check.py with the overlay's python; return its JSON result."""
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
                "PYTHONNOUSERSITE": "1"}
    full_env.update(env or {})
    proc = subprocess.run([str(venv / "bin" / "python"), str(HERE / "real_check.py")], capture_output=True, text=True,
                          env=full_env, check=False)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    line = [item for item in proc.stdout.splitlines() if item.startswith("RESULT=")][-1]
    result = json.loads(line[len("RESULT="):])
    result["stderr"] = proc.stderr
    return result
