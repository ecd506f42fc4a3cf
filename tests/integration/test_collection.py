"""The collection builds with ansible-galaxy and the tarball installs; site.yml stops cleanly without a GPU."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_build_and_install(tmp_path):
    build = subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "build", "--force", "--output-path", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (tarball,) = tmp_path.glob("dgxspark-vllm-*.tar.gz")
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert "plugins/modules/gpu_facts.py" in names
    assert "roles/preflight/tasks/main.yml" in names
    assert not [n for n in names if n.startswith((".venv", ".cache", ".git/", "tests/output"))]

    dest = tmp_path / "installed"
    install = subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "install", "--force", str(tarball), "-p", str(dest)],
        cwd=tmp_path, capture_output=True, text=True, check=False,
        env={"ANSIBLE_COLLECTIONS_PATH": str(dest), "PATH": str(BIN) + ":/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert install.returncode == 0, install.stdout + install.stderr
    assert (dest / "ansible_collections" / "dgxspark" / "vllm" / "MANIFEST.json").is_file()
    doc = subprocess.run(
        [str(BIN / "ansible-doc"), "-t", "module", "dgxspark.vllm.gpu_facts"],
        capture_output=True, text=True, check=False,
        env={"ANSIBLE_COLLECTIONS_PATH": str(dest), "PATH": str(BIN) + ":/usr/bin:/bin"},
    )
    assert doc.returncode == 0, doc.stderr
    assert "nvidia-smi" in doc.stdout


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has an NVIDIA driver")
def test_site_on_this_gpu_less_machine_stops_in_preflight():
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "site.yml"],
        cwd=ROOT, capture_output=True, text=True, check=False,
        env={"PATH": str(BIN) + ":/usr/bin:/bin:/usr/sbin:/sbin", "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
             "ANSIBLE_NOCOLOR": "1", "HOME": str(Path.home())},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "localhost: no NVIDIA GPU found (nvidia-smi not found" in out
    assert "Traceback" not in out
    recap = [line for line in out.splitlines() if line.startswith("localhost ") and "changed=" in line]
    assert recap and "changed=0" in recap[-1] and "failed=1" in recap[-1], out
