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


# Two lanes under pytest-xdist: scripts/test.sh runs `-n 2 --dist loadfile --no-loadscope-reorder`, so each test
# file runs whole on one worker (its module fixtures built once, as without xdist), and the workers take the files
# in the order below. The molecule scenarios that serve with the real vLLM (tests/molecule/test_serving_scenarios.py:
# most of the run's CPU time is theirs) go first, to one worker; the other worker takes everything else, the long
# files first, so that what the serving worker picks up near its end (xdist hands a worker another file once two or
# fewer of its tests are left) is a short one. The lanes wait on different things (downloads, nvcc, vLLM's
# start-up), so they overlap instead of queueing.
ORDER = ("tests/molecule/test_serving_scenarios.py", "tests/lint/test_ansible_test.py", "tests/molecule/",
         "tests/integration/")


def pytest_collection_modifyitems(config, items):
    # Only on an xdist worker (the workers collect; each must order its collection the same way).
    if not hasattr(config, "workerinput"):
        return

    def rank(pair):
        position, item = pair
        first = next((i for i, prefix in enumerate(ORDER) if item.nodeid.startswith(prefix)), len(ORDER))
        return (first, position)

    items[:] = [pair[1] for pair in sorted(enumerate(items), key=rank)]
