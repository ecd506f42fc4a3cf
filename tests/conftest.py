"""Shared pytest set-up: make this checkout importable as ansible_collections.dgxspark.vllm."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COLLECTIONS = ROOT / ".cache" / "collections"


def _link_collection():
    parent = COLLECTIONS / "ansible_collections" / "dgxspark"
    parent.mkdir(parents=True, exist_ok=True)
    link = parent / "vllm"
    if not link.is_symlink():
        os.symlink("../../../..", link)


_link_collection()
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
