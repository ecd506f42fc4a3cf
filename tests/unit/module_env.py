"""The PYTHONPATH for a module file run as Ansible runs it (``python MODULE ARGSFILE``) by the module tests.

A module imports ``ansible`` and ``ansible_collections.dgxspark.vllm``. Under pytest in the toolchain venv
``ansible`` is in site-packages; under ``ansible-test units --venv`` it is not, and ansible-test puts it on
PYTHONPATH instead. A test that gives the module a fresh environment must therefore pass on both: this
checkout as the collection, and the directory that holds the ``ansible`` package this test process imported.
"""

from __future__ import annotations

import os
from pathlib import Path

import ansible

ROOT = Path(__file__).resolve().parents[2]
# tests/conftest.py links this checkout as .cache/collections/ansible_collections/dgxspark/vllm.
COLLECTIONS = ROOT / ".cache" / "collections"
ANSIBLE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(ansible.__file__)))


def module_pythonpath(*extra) -> str:
    """COLLECTIONS, then extra directories, then the directory holding ansible."""
    return os.pathsep.join([str(COLLECTIONS)] + [str(p) for p in extra] + [ANSIBLE_PARENT])
