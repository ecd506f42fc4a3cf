"""The role's package step with the real pip, run by ansible-playbook on this machine (uv: molecule fa4_shim).

The venv is a fresh one with pip. vLLM in it is a stand-in: a vllm-*.dist-info directory whose METADATA
requires einops and packaging (what the role reads); einops 0.8.1 is really installed from the wheelhouse.
The wheels come from the wheelhouse of realvllm.py (--no-index), as on an air-gapped host.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import realvllm

ROOT = Path(__file__).resolve().parents[3]

PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: dgxspark.vllm.fa4_shim
        tasks_from: facts
    - ansible.builtin.include_role:
        name: dgxspark.vllm.fa4_shim
        tasks_from: packages
"""


@pytest.fixture
def venv(tmp_path):
    wheelhouse = realvllm.ensure_wheelhouse()
    path = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    python = path / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-index", "--find-links", str(wheelhouse), "einops==0.8.1"],
                   check=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    info = Path(site) / "vllm-0.0.0+standin.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm\nVersion: 0.0.0+standin\n"
                                   "Requires-Dist: einops\nRequires-Dist: packaging\n")
    (info / "RECORD").write_text("")
    return path, wheelhouse


def versions(path):
    script = "import json; from importlib import metadata as m; print(json.dumps({d.metadata['Name'].lower(): d.version for d in m.distributions()}))"
    return json.loads(subprocess.run([str(path / "bin" / "python"), "-c", script], capture_output=True, text=True, check=True).stdout)


def play(tmp_path, extra_vars):
    return realvllm.run_role_play(tmp_path, PLAYBOOK, extra_vars)


def test_pip_installs_only_the_missing_and_keeps_vllms_einops(tmp_path, venv):
    path, wheelhouse = venv
    args = {"fa4_shim_venv_path": str(path), "fa4_shim_packages": ["packaging==26.3", "einops"],
            "fa4_shim_installer": "pip", "fa4_shim_wheelhouse": str(wheelhouse)}
    proc, recap = play(tmp_path, args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Install packaging==26.3]" in proc.stdout, proc.stdout[-3000:]
    # the constraints file (created, written, removed) and the install itself
    assert "changed=4" in recap, recap
    have = versions(path)
    assert have["packaging"] == "26.3" and have["einops"] == "0.8.1", "einops is vLLM's: it stays where it was"
    proc, recap = play(tmp_path, args)
    assert proc.returncode == 0 and "changed=0" in recap, recap


def test_a_request_that_would_move_vllms_package_fails_and_moves_nothing(tmp_path, venv):
    path, wheelhouse = venv
    proc, recap = play(tmp_path, {"fa4_shim_venv_path": str(path), "fa4_shim_packages": ["einops==0.8.2"],
                                  "fa4_shim_installer": "pip", "fa4_shim_wheelhouse": str(wheelhouse)})
    assert proc.returncode != 0 and "failed=1" in recap
    assert "einops==0.8.1" in proc.stdout and "einops==0.8.2" in proc.stdout, "pip names the constraint and the request"
    assert versions(path)["einops"] == "0.8.1"
    assert not list(Path("/tmp").glob("ansible.*.fa4_shim.constraints.txt")), "the constraints file is removed"
