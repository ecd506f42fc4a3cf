"""Unit tests of the read-only fa2_library_info module, run as Ansible runs it (a subprocess with JSON arguments),
on library files that the real fa2_library module installs and puts back."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from ansible_collections.dgxspark.vllm.tests.unit.module_env import module_pythonpath

MODULES = Path(__file__).resolve().parents[4] / "plugins" / "modules"


def run(module, tmp_path, args):
    argsfile = tmp_path / ("args-%s.json" % module)
    argsfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": module_pythonpath()}
    proc = subprocess.run([sys.executable, str(MODULES / (module + ".py")), str(argsfile)],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def info(tmp_path, lib, check_mode=False):
    result = run("fa2_library_info", tmp_path, {"path": str(lib), "_ansible_check_mode": check_mode})
    assert result["changed"] is False and not result.get("failed"), result
    return {k: result[k] for k in ("exists", "sha256", "manifest", "ours", "stock_exists", "pending")}


def test_info_follows_install_and_stock(tmp_path):
    lib = tmp_path / "vllm_flash_attn" / "_vllm_fa2_C.abi3.so"
    assert info(tmp_path, lib) == {"exists": False, "sha256": None, "manifest": None, "ours": False,
                                   "stock_exists": False, "pending": False}
    lib.parent.mkdir()
    lib.write_bytes(b"stock")
    stock = hashlib.sha256(b"stock").hexdigest()
    assert info(tmp_path, lib, check_mode=True) == {"exists": True, "sha256": stock, "manifest": None, "ours": False,
                                                    "stock_exists": False, "pending": False}
    build = tmp_path / "new.so"
    build.write_bytes(b"native")
    native = hashlib.sha256(b"native").hexdigest()
    done = run("fa2_library", tmp_path, {"path": str(lib), "state": "installed", "src": str(build), "sha256": native,
                                         "manifest": {"build_key": "k"}})
    assert done["changed"] is True, done
    now = info(tmp_path, lib)
    assert now["ours"] is True and now["sha256"] == native and now["manifest"]["build_key"] == "k"
    assert now["stock_exists"] is True and now["pending"] is False
    assert run("fa2_library", tmp_path, {"path": str(lib), "state": "stock"})["changed"] is True
    assert info(tmp_path, lib) == {"exists": True, "sha256": stock, "manifest": None, "ours": False,
                                   "stock_exists": False, "pending": False}


def test_a_manifest_that_is_not_json_fails_naming_it(tmp_path):
    lib = tmp_path / "_vllm_fa2_C.abi3.so"
    lib.write_bytes(b"x")
    (tmp_path / "_vllm_fa2_C.abi3.so.dgxspark.json").write_text("{not json")
    result = run("fa2_library_info", tmp_path, {"path": str(lib)})
    assert result["failed"] is True and str(lib) in result["msg"] and "is not valid JSON" in result["msg"], result


def test_fa2_library_no_longer_takes_state_info(tmp_path):
    result = run("fa2_library", tmp_path, {"path": str(tmp_path / "lib.so"), "state": "info"})
    assert result["failed"] is True and "value of state must be one of: installed, stock, snapshot, restored" in result["msg"]
