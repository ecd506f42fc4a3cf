# -*- coding: utf-8 -*-
# Copyright: dgxspark.vllm contributors
# Apache License 2.0 (see LICENSE)
"""File operations on vLLM's FA2 library, written so that an interruption at any point leaves a
working library under its name (see plugins/modules/fa2_library.py for the states).

Files, next to the library L (``.../vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so``):

* ``L.stock``: the library vLLM shipped, saved before the first replacement;
* ``L.dgxspark.json``: the manifest of the installed build (present only while our build is installed);
* ``L.dgxspark.json.pending``: the manifest of an install in progress (the journal);
* ``L.<slot>`` and ``L.<slot>.json``: a saved library and what it was (slots ``previous``, ``rollback``).

Every file is written to a temporary name in the same directory, flushed, then renamed over its
final name, so a name always holds either the old or the new complete content.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

# One file-hashing helper for the whole FA2 path (fa2_source keys sources with it); re-exported here.
from ansible_collections.dgxspark.vllm.plugins.module_utils.fa2_source import sha256_file  # noqa: F401

STOCK_SUFFIX = ".stock"
MANIFEST_SUFFIX = ".dgxspark.json"
PENDING_SUFFIX = ".pending"


class LibraryError(Exception):
    """A state the module refuses to act on; the message names the file and what is wrong."""


def read_json(path):
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        try:
            return json.load(handle)
        except ValueError as exc:
            raise LibraryError("%s is not valid JSON (%s); remove it or restore it from a backup" % (path, exc))


def _fsync_dir(directory):
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _match_owner(path, like):
    """Give path the owner, group and mode of the file (or directory) `like`."""
    info = os.stat(like)
    if os.geteuid() == 0:
        os.chown(path, info.st_uid, info.st_gid)
    mode = info.st_mode & 0o7777
    if os.path.isdir(like):
        mode = 0o644
    os.chmod(path, mode)


def _staged(directory, name):
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + name + ".tmp-")
    os.close(fd)
    return tmp


def copy_atomic(src, dest, like=None, expect_sha256=None):
    """Copy src to dest through a temporary file in dest's directory, then rename.

    When expect_sha256 is given the staged copy is hashed before the rename; a mismatch removes it
    and raises, leaving dest untouched.
    """
    directory = os.path.dirname(dest)
    tmp = _staged(directory, os.path.basename(dest))
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 4 * 1024 * 1024)
            fout.flush()
            os.fsync(fout.fileno())
        _match_owner(tmp, like if like and os.path.exists(like) else directory)
        if expect_sha256 is not None:
            got = sha256_file(tmp)
            if got != expect_sha256:
                raise LibraryError("copy of %s has sha256 %s, expected %s; %s left unchanged" % (src, got, expect_sha256, dest))
        os.replace(tmp, dest)
        _fsync_dir(directory)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(path, data, like):
    directory = os.path.dirname(path)
    tmp = _staged(directory, os.path.basename(path))
    try:
        with open(tmp, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        _match_owner(tmp, like)
        if os.path.exists(like) and not os.path.isdir(like):
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        _fsync_dir(directory)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove(path):
    if os.path.lexists(path):
        os.unlink(path)
        return True
    return False


class Library:
    """The FA2 library at `path` and the files the role keeps beside it."""

    def __init__(self, path, check_mode=False):
        self.path = path
        self.directory = os.path.dirname(path)
        self.stock = path + STOCK_SUFFIX
        self.manifest = path + MANIFEST_SUFFIX
        self.pending = self.manifest + PENDING_SUFFIX
        self.check_mode = check_mode
        self.actions = []

    # -- probes ---------------------------------------------------------------------------------

    def slot(self, name):
        return self.path + "." + name, self.path + "." + name + ".json"

    def current(self):
        """{'exists', 'sha256', 'manifest', 'ours'}: ours when the manifest describes the file in place."""
        if not os.path.isfile(self.path):
            return {"exists": False, "sha256": None, "manifest": None, "ours": False}
        digest = sha256_file(self.path)
        manifest = read_json(self.manifest)
        return {"exists": True, "sha256": digest, "manifest": manifest,
                "ours": bool(manifest) and manifest.get("sha256") == digest}

    def _do(self, message, func, *args, **kwargs):
        self.actions.append(message)
        if not self.check_mode:
            func(*args, **kwargs)

    def recover(self):
        """Finish or undo an install that was interrupted between the library rename and the manifest rename."""
        if not os.path.exists(self.pending):
            return
        pending = read_json(self.pending) or {}
        if os.path.isfile(self.path) and pending.get("sha256") == sha256_file(self.path):
            self._do("completed an interrupted install: %s" % self.manifest, os.replace, self.pending, self.manifest)
        else:
            self._do("removed the journal of an install that never replaced the library: %s" % self.pending,
                     os.unlink, self.pending)

    # -- states ---------------------------------------------------------------------------------

    def install(self, src, expect_sha256, manifest, backup_slot="previous"):
        """Put src in place of the library, with its manifest. The current library is kept in backup_slot
        (and, when it is vLLM's own, as the stock backup)."""
        self.recover()
        if not os.path.isfile(src):
            raise LibraryError("src %s does not exist" % src)
        if not os.path.isfile(self.path):
            raise LibraryError("%s does not exist: is vLLM installed in this venv?" % self.path)
        src_sha = sha256_file(src)
        if src_sha != expect_sha256:
            raise LibraryError("src %s has sha256 %s, expected %s; nothing was changed" % (src, src_sha, expect_sha256))
        manifest = dict(manifest, sha256=expect_sha256)
        cur = self.current()
        if cur["sha256"] == expect_sha256 and cur["manifest"] == manifest:
            return
        if not cur["ours"]:
            # vLLM's own file (first install, or pip put a new one back): that is the stock library.
            if not os.path.isfile(self.stock) or sha256_file(self.stock) != cur["sha256"]:
                self._do("saved vLLM's library as %s" % self.stock, copy_atomic, self.path, self.stock, self.path)
        if backup_slot and cur["sha256"] != expect_sha256:
            self.save_slot(backup_slot, cur)
        if cur["sha256"] != expect_sha256:
            self._do("wrote the manifest journal %s" % self.pending, write_json_atomic, self.pending, manifest, self.path)
            self._do("installed %s as %s (sha256 %s)" % (src, self.path, expect_sha256),
                     copy_atomic, src, self.path, self.path, expect_sha256)
            self._do("committed the manifest %s" % self.manifest, os.replace, self.pending, self.manifest)
        else:
            self._do("rewrote the manifest %s" % self.manifest, write_json_atomic, self.manifest, manifest, self.path)

    def save_slot(self, name, cur=None, meta=None):
        cur = cur or self.current()
        if not cur["exists"]:
            raise LibraryError("%s does not exist; nothing to save in slot %s" % (self.path, name))
        lib_copy, info_path = self.slot(name)
        info = {"sha256": cur["sha256"], "manifest": cur["manifest"] if cur["ours"] else None, "meta": meta or {}}
        old = read_json(info_path)
        if old == info and os.path.isfile(lib_copy) and sha256_file(lib_copy) == cur["sha256"]:
            return
        self._do("saved %s in slot %s (%s)" % (self.path, name, lib_copy), copy_atomic, self.path, lib_copy, self.path)
        self._do("wrote %s" % info_path, write_json_atomic, info_path, info, self.path)

    def restore_slot(self, name, require_meta=None):
        self.recover()
        lib_copy, info_path = self.slot(name)
        info = read_json(info_path)
        if info is None or not os.path.isfile(lib_copy):
            raise LibraryError("no saved library in slot %s (%s); run the snapshot first" % (name, lib_copy))
        for key, want in (require_meta or {}).items():
            have = info.get("meta", {}).get(key)
            if have != want:
                raise LibraryError("slot %s was saved for %s=%s, this host now has %s=%s; not restoring it"
                                   % (name, key, have, key, want))
        slot_sha = sha256_file(lib_copy)
        if slot_sha != info["sha256"]:
            raise LibraryError("slot %s: %s has sha256 %s, its record says %s; not restoring a damaged copy"
                               % (name, lib_copy, slot_sha, info["sha256"]))
        cur = self.current()
        if cur["sha256"] != info["sha256"]:
            if info["manifest"]:
                self._do("wrote the manifest journal %s" % self.pending, write_json_atomic, self.pending, info["manifest"], self.path)
            self._do("restored %s from slot %s" % (self.path, name), copy_atomic, lib_copy, self.path, self.path, info["sha256"])
            if info["manifest"]:
                self._do("committed the manifest %s" % self.manifest, os.replace, self.pending, self.manifest)
        elif info["manifest"] and cur["manifest"] != info["manifest"]:
            self._do("rewrote the manifest %s" % self.manifest, write_json_atomic, self.manifest, info["manifest"], self.path)
        if not info["manifest"] and os.path.exists(self.manifest):
            self._do("removed the manifest %s (the slot held vLLM's own library)" % self.manifest, remove, self.manifest)

    def restore_stock(self, drop_slots=("previous", "rollback")):
        self.recover()
        cur = self.current()
        if os.path.isfile(self.stock):
            stock_sha = sha256_file(self.stock)
            if cur["sha256"] != stock_sha:
                if cur["exists"] and not cur["ours"]:
                    # pip replaced the library since the backup was taken: the file in place is vLLM's own.
                    pass
                else:
                    self._do("restored vLLM's library from %s" % self.stock, copy_atomic, self.stock, self.path, self.path, stock_sha)
            self._do("removed the stock backup %s" % self.stock, remove, self.stock)
        elif cur["ours"]:
            raise LibraryError("%s is a dgxspark build and the stock backup %s is missing; reinstall vLLM "
                               "(pip install --force-reinstall --no-deps vllm==<version>) to get vLLM's library back"
                               % (self.path, self.stock))
        if os.path.exists(self.manifest):
            self._do("removed the manifest %s" % self.manifest, remove, self.manifest)
        for name in drop_slots:
            for path in self.slot(name):
                if os.path.exists(path):
                    self._do("removed %s" % path, remove, path)
