"""antsibull-docs lint-collection-docs --plugin-docs: every module, plugin and role entry point documents itself,
and every O(), RV(), M() reference in the docs points at something that exists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# tests/conftest.py links this checkout here, so ansible-doc finds it as dgxspark.vllm.
COLLECTION = ROOT / ".cache" / "collections" / "ansible_collections" / "dgxspark" / "vllm"


def test_collection_docs_lint_clean():
    env = dict(os.environ, PATH="%s:%s" % (BIN, os.environ.get("PATH", "/usr/bin:/bin")),
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".cache" / "collections"))
    proc = subprocess.run([str(BIN / "antsibull-docs"), "lint-collection-docs", "--plugin-docs", "."],
                          cwd=COLLECTION, env=env, capture_output=True, text=True, check=False, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and not out.strip(), out
