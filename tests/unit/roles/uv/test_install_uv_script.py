"""Unit tests of roles/uv/files/dgxspark_install_uv.py, the step that unpacks uv and swaps it in atomically.

The archives are built by the tests in the two real layouts (a wheel: uv-<ver>.data/scripts/uv; a release
tarball: uv-<target>/uv). The uv inside them is a stand-in: a shell script that prints "uv <version>", so the
script's version check, its refusal to replace on a mismatch and its handling of bad archives can be tested
without a real uv build.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
SCRIPT = ROOT / "roles" / "uv" / "files" / "dgxspark_install_uv.py"


def stand_in(version: str, name: str = "uv") -> bytes:
    return ("#!/bin/sh\necho '%s %s (stand-in)'\n" % (name, version)).encode()


def make_wheel(path: Path, version: str, reported: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("uv/__init__.py", "")
        zf.writestr("uv-%s.data/scripts/uv" % version, stand_in(reported or version))
        zf.writestr("uv-%s.data/scripts/uvx" % version, stand_in(reported or version, "uvx"))
        zf.writestr("uv-%s.dist-info/METADATA" % version, "Name: uv\nVersion: %s\n" % version)
    return path


def make_tarball(path: Path, version: str) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name in ("uv", "uvx"):
            data = stand_in(version, name)
            info = tarfile.TarInfo("uv-x86_64-unknown-linux-gnu/" + name)
            info.size = len(data)
            info.mode = 0o755
            tf.addfile(info, io.BytesIO(data))
    return path


def run(archive: Path, dest: Path, version: str):
    return subprocess.run([sys.executable, str(SCRIPT), "--archive", str(archive), "--dest", str(dest),
                           "--version", version], capture_output=True, text=True, check=False)


@pytest.mark.parametrize("maker, name", [(make_wheel, "uv-1.2.3-py3-none-manylinux_2_17_x86_64.whl"),
                                         (make_tarball, "uv-x86_64-unknown-linux-gnu.tar.gz")])
def test_installs_uv_and_uvx_from_either_layout(tmp_path, maker, name):
    archive = maker(tmp_path / name, "1.2.3")
    dest = tmp_path / "bin"
    proc = run(archive, dest, "1.2.3")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"version": "1.2.3", "installed": ["uv", "uvx"], "dest": str(dest),
                                       "archive": str(archive)}
    for binary in ("uv", "uvx"):
        assert (dest / binary).stat().st_mode & 0o777 == 0o755
    assert subprocess.run([str(dest / "uv"), "--version"], capture_output=True, text=True,
                          check=True).stdout.startswith("uv 1.2.3")
    assert sorted(p.name for p in dest.iterdir()) == ["uv", "uvx"]  # no temporary files left


def test_replaces_an_older_uv(tmp_path):
    dest = tmp_path / "bin"
    assert run(make_wheel(tmp_path / "old.whl", "1.0.0"), dest, "1.0.0").returncode == 0
    assert run(make_wheel(tmp_path / "new.whl", "1.1.0"), dest, "1.1.0").returncode == 0
    assert b"uv 1.1.0" in (dest / "uv").read_bytes()
    assert b"uvx 1.1.0" in (dest / "uvx").read_bytes()


def test_a_binary_reporting_another_version_replaces_nothing(tmp_path):
    dest = tmp_path / "bin"
    assert run(make_wheel(tmp_path / "good.whl", "1.0.0"), dest, "1.0.0").returncode == 0
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    proc = run(make_wheel(tmp_path / "liar.whl", "2.0.0", reported="1.9.9"), dest, "2.0.0")
    assert proc.returncode == 1
    assert "reports 'uv 1.9.9 (stand-in)'" in proc.stderr and "expected version 2.0.0" in proc.stderr
    assert "nothing was replaced" in proc.stderr
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before


def test_an_archive_without_uv_is_refused(tmp_path):
    archive = tmp_path / "empty.whl"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("uv/__init__.py", "")
    proc = run(archive, tmp_path / "bin", "1.0.0")
    assert proc.returncode == 1
    assert "holds no uv binary" in proc.stderr


def test_a_file_that_is_no_archive_is_refused(tmp_path):
    archive = tmp_path / "page.whl"
    archive.write_text("<html>404</html>")
    proc = run(archive, tmp_path / "bin", "1.0.0")
    assert proc.returncode == 1
    assert "neither a wheel (zip) nor a tar archive" in proc.stderr
    assert not (tmp_path / "bin" / "uv").exists()
