"""Lint gates: yamllint and ansible-lint (production profile), run on the whole tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(argv):
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    return proc.returncode, (proc.stdout + proc.stderr)


def test_yamllint_clean():
    rc, out = _run([str(BIN / "yamllint"), "-s", "."])
    assert rc == 0, out


def test_ansible_lint_production_profile_clean():
    rc, out = _run([str(BIN / "ansible-lint"), "--offline", "--profile", "production", "-q"])
    assert rc == 0, out


def test_no_blanket_skips_in_lint_config():
    text = (ROOT / ".ansible-lint").read_text()
    assert "skip_list" not in text and "warn_list" not in text, "blanket lint skips are not allowed"
    assert "disable" not in (ROOT / ".yamllint").read_text()
