"""Unit tests of module_utils/fa2_library.py: atomic install, stock backup, slots, interrupted runs.

The "libraries" here are small files with distinct contents; the operations under test only move,
hash and copy bytes, so real FA2 libraries are not needed. Interruptions are simulated by making one
step of the sequence raise (as a KeyboardInterrupt or a failed rename would).
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from ansible_collections.dgxspark.vllm.plugins.module_utils import fa2_library as fl

LIB = "_vllm_fa2_C.abi3.so"


@pytest.fixture
def venv(tmp_path):
    directory = tmp_path / "site-packages" / "vllm" / "vllm_flash_attn"
    directory.mkdir(parents=True)
    lib = directory / LIB
    lib.write_bytes(b"STOCK-sm80+ptx" * 1000)
    lib.chmod(0o755)
    build = tmp_path / "build.so"
    build.write_bytes(b"NATIVE-sm121" * 1000)
    return {"dir": directory, "lib": lib, "build": build, "stock_bytes": lib.read_bytes(), "tmp": tmp_path}


def manifest_for(key="k1"):
    return {"build_key": key, "fa2_archs": "12.1", "key": {"vllm": "0.33.0"}}


def sha(path):
    return fl.sha256_file(str(path))


def stray_files(directory):
    return [p.name for p in directory.iterdir() if ".tmp-" in p.name]


def install(venv, src=None, key="k1", check_mode=False):
    src = src or venv["build"]
    lib = fl.Library(str(venv["lib"]), check_mode=check_mode)
    lib.install(str(src), sha(src), manifest_for(key))
    return lib


def test_first_install_keeps_stock_and_writes_manifest(venv):
    lib = install(venv)
    assert venv["lib"].read_bytes() == venv["build"].read_bytes()
    assert (venv["dir"] / (LIB + ".stock")).read_bytes() == venv["stock_bytes"]
    manifest = json.loads((venv["dir"] / (LIB + ".dgxspark.json")).read_text())
    assert manifest["sha256"] == sha(venv["build"]) and manifest["build_key"] == "k1"
    assert (venv["lib"].stat().st_mode & 0o777) == 0o755, "the replaced library's mode is kept"
    assert (venv["dir"] / (LIB + ".previous")).read_bytes() == venv["stock_bytes"]
    assert not (venv["dir"] / (LIB + ".dgxspark.json.pending")).exists()
    assert stray_files(venv["dir"]) == []
    assert any("saved vLLM's library" in a for a in lib.actions)


def test_second_install_with_same_inputs_does_nothing(venv):
    install(venv)
    inode = venv["lib"].stat().st_ino
    lib = install(venv)
    assert lib.actions == []
    assert venv["lib"].stat().st_ino == inode


def test_check_mode_lists_actions_and_touches_nothing(venv):
    lib = install(venv, check_mode=True)
    assert lib.actions and any("installed" in a for a in lib.actions)
    assert venv["lib"].read_bytes() == venv["stock_bytes"]
    assert sorted(p.name for p in venv["dir"].iterdir()) == [LIB]


def test_wrong_sha256_changes_nothing(venv):
    lib = fl.Library(str(venv["lib"]))
    with pytest.raises(fl.LibraryError, match="expected 0000"):
        lib.install(str(venv["build"]), "0000", manifest_for())
    assert venv["lib"].read_bytes() == venv["stock_bytes"]
    assert sorted(p.name for p in venv["dir"].iterdir()) == [LIB]


def test_copy_that_does_not_match_its_hash_is_not_renamed(venv):
    dest = venv["dir"] / "target.so"
    dest.write_bytes(b"old")
    with pytest.raises(fl.LibraryError, match="left unchanged"):
        fl.copy_atomic(str(venv["build"]), str(dest), expect_sha256="f" * 64)
    assert dest.read_bytes() == b"old"
    assert stray_files(venv["dir"]) == []


def test_interrupted_copy_leaves_the_working_library(venv, monkeypatch):
    install(venv)                                    # build 1 in place
    build2 = venv["tmp"] / "build2.so"
    build2.write_bytes(b"NATIVE-v2" * 5000)

    real_copy = shutil.copyfileobj

    def boom(fin, fout, *args):
        if os.path.basename(fout.name).startswith("." + LIB + ".tmp-"):   # the copy onto the library's name
            fout.write(b"half a libr")
            raise KeyboardInterrupt("interrupted during the copy")
        return real_copy(fin, fout, *args)

    monkeypatch.setattr(shutil, "copyfileobj", boom)
    with pytest.raises(KeyboardInterrupt):
        install(venv, src=build2, key="k2")
    monkeypatch.undo()
    assert venv["lib"].read_bytes() == venv["build"].read_bytes()
    assert stray_files(venv["dir"]) == []
    # the journal of the install that never happened is cleaned up by the next call
    lib = install(venv, src=build2, key="k2")
    assert any("never replaced" in a for a in lib.actions)
    assert venv["lib"].read_bytes() == build2.read_bytes()
    assert json.loads((venv["dir"] / (LIB + ".dgxspark.json")).read_text())["build_key"] == "k2"


def test_interrupted_between_the_renames_is_completed_next_time(venv, monkeypatch):
    real_replace = os.replace

    def replace(src, dst):
        if str(src).endswith(".pending"):
            raise KeyboardInterrupt("interrupted before the manifest rename")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        install(venv)
    monkeypatch.undo()
    assert venv["lib"].read_bytes() == venv["build"].read_bytes()       # the new library is whole
    assert (venv["dir"] / (LIB + ".dgxspark.json.pending")).exists()
    lib = install(venv)
    assert lib.actions == ["completed an interrupted install: %s" % (str(venv["lib"]) + ".dgxspark.json")]
    assert not (venv["dir"] / (LIB + ".stock.stock")).exists()
    assert (venv["dir"] / (LIB + ".stock")).read_bytes() == venv["stock_bytes"]


def test_new_vllm_library_from_pip_becomes_the_stock_backup(venv):
    install(venv)
    venv["lib"].unlink()
    venv["lib"].write_bytes(b"STOCK-of-a-newer-vllm" * 100)        # pip upgrade put its own file back
    new_stock = venv["lib"].read_bytes()
    build2 = venv["tmp"] / "build2.so"
    build2.write_bytes(b"NATIVE-for-new-vllm" * 100)
    install(venv, src=build2, key="k2")
    assert (venv["dir"] / (LIB + ".stock")).read_bytes() == new_stock


def test_restore_stock_and_again(venv):
    install(venv)
    fl.Library(str(venv["lib"])).save_slot("rollback")
    lib = fl.Library(str(venv["lib"]))
    lib.restore_stock()
    assert venv["lib"].read_bytes() == venv["stock_bytes"]
    assert sorted(p.name for p in venv["dir"].iterdir()) == [LIB]
    again = fl.Library(str(venv["lib"]))
    again.restore_stock()
    assert again.actions == []


def test_restore_stock_keeps_a_newer_vllm_library(venv):
    install(venv)
    venv["lib"].unlink()
    venv["lib"].write_bytes(b"STOCK-of-a-newer-vllm")
    fl.Library(str(venv["lib"])).restore_stock()
    assert venv["lib"].read_bytes() == b"STOCK-of-a-newer-vllm"
    assert sorted(p.name for p in venv["dir"].iterdir()) == [LIB]


def test_restore_stock_without_backup_refuses(venv):
    install(venv)
    (venv["dir"] / (LIB + ".stock")).unlink()
    with pytest.raises(fl.LibraryError, match="stock backup .* is missing"):
        fl.Library(str(venv["lib"])).restore_stock()
    assert venv["lib"].read_bytes() == venv["build"].read_bytes()


def test_snapshot_then_restore(venv):
    install(venv)
    snap = fl.Library(str(venv["lib"]))
    snap.save_slot("rollback", meta={"vllm_version": "0.33.0"})
    assert snap.actions
    again = fl.Library(str(venv["lib"]))
    again.save_slot("rollback", meta={"vllm_version": "0.33.0"})
    assert again.actions == [], "a second snapshot of the same library changes nothing"

    build2 = venv["tmp"] / "build2.so"
    build2.write_bytes(b"NATIVE-v2")
    install(venv, src=build2, key="k2")
    with pytest.raises(fl.LibraryError, match="vllm_version=0.33.0, this host now has vllm_version=0.34.0"):
        fl.Library(str(venv["lib"])).restore_slot("rollback", require_meta={"vllm_version": "0.34.0"})
    assert venv["lib"].read_bytes() == build2.read_bytes()

    fl.Library(str(venv["lib"])).restore_slot("rollback", require_meta={"vllm_version": "0.33.0"})
    assert venv["lib"].read_bytes() == venv["build"].read_bytes()
    assert json.loads((venv["dir"] / (LIB + ".dgxspark.json")).read_text())["build_key"] == "k1"
    idle = fl.Library(str(venv["lib"]))
    idle.restore_slot("rollback")
    assert idle.actions == []


def test_snapshot_of_the_stock_library_restores_without_manifest(venv):
    fl.Library(str(venv["lib"])).save_slot("rollback")
    install(venv)
    fl.Library(str(venv["lib"])).restore_slot("rollback")
    assert venv["lib"].read_bytes() == venv["stock_bytes"]
    assert not (venv["dir"] / (LIB + ".dgxspark.json")).exists()


def test_restore_refuses_missing_or_damaged_slot(venv):
    with pytest.raises(fl.LibraryError, match="no saved library in slot rollback"):
        fl.Library(str(venv["lib"])).restore_slot("rollback")
    fl.Library(str(venv["lib"])).save_slot("rollback")
    (venv["dir"] / (LIB + ".rollback")).write_bytes(b"bit rot")
    with pytest.raises(fl.LibraryError, match="not restoring a damaged copy"):
        fl.Library(str(venv["lib"])).restore_slot("rollback")


def test_previous_slot_is_the_library_before_the_last_install(venv):
    install(venv)
    build2 = venv["tmp"] / "build2.so"
    build2.write_bytes(b"NATIVE-v2")
    install(venv, src=build2, key="k2")
    fl.Library(str(venv["lib"])).restore_slot("previous")
    assert venv["lib"].read_bytes() == venv["build"].read_bytes()
    assert json.loads((venv["dir"] / (LIB + ".dgxspark.json")).read_text())["build_key"] == "k1"


def test_corrupt_manifest_is_reported(venv):
    (venv["dir"] / (LIB + ".dgxspark.json")).write_text("{not json")
    with pytest.raises(fl.LibraryError, match="is not valid JSON"):
        install(venv)
