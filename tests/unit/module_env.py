"""The PYTHONPATH for a module file run as Ansible runs it (``python MODULE ARGSFILE``) by the module tests.

A module imports ``ansible`` and ``ansible_collections.dgxspark.vllm``. Under pytest in the toolchain venv
``ansible`` is in site-packages; under ``ansible-test units --venv`` it is not, and ansible-test puts it on
PYTHONPATH instead. A test that gives the module a fresh environment must therefore pass on both: this
checkout as the collection, and the directory that holds the ``ansible`` package this test process imported.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import ansible
import pytest

ROOT = Path(__file__).resolve().parents[2]
# tests/conftest.py links this checkout as .cache/collections/ansible_collections/dgxspark/vllm.
COLLECTIONS = ROOT / ".cache" / "collections"
ANSIBLE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(ansible.__file__)))


def module_pythonpath(*extra) -> str:
    """COLLECTIONS, then extra directories, then the directory holding ansible."""
    return os.pathsep.join([str(COLLECTIONS)] + [str(p) for p in extra] + [ANSIBLE_PARENT])


def ansible_doc() -> str:
    """ansible-doc beside this Python (the toolchain venv), else the one on PATH; run it with the inherited PATH.

    ansible-test units --venv runs the module tests in a venv of its own, whose ansible holds module_utils only
    (modules may not import the controller's code), so ansible-doc cannot run there: those tests are skipped
    in that one setting, where the ansible-doc sanity test renders the same documentation.
    """
    if importlib.util.find_spec("ansible.cli") is None:
        pytest.skip("ansible-test's module test context has ansible.module_utils only (no ansible-doc); "
                    "the ansible-doc sanity test renders these docs")
    beside = Path(sys.executable).parent / "ansible-doc"
    found = str(beside) if beside.is_file() else shutil.which("ansible-doc")
    assert found, "ansible-doc is neither beside %s nor on PATH" % sys.executable
    return found
