#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dgxspark.vllm contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: model_stage
short_description: Stage a Hugging Face model at a pinned revision on the host, with a verified manifest
version_added: 0.1.0
description:
  - Downloads a model from the Hugging Face Hub (or a mirror, O(endpoint)) with the real C(huggingface_hub) client
    (its file metadata and HTTP download, one file at a time), into the Hugging Face cache layout under O(hf_home)
    (C(hub/models--<org>--<name>/snapshots/<commit>/), so that C(vllm serve <repo id>) with C(HF_HUB_OFFLINE=1) finds it)
    or into a plain directory (O(dest)).
  - A branch or tag in O(revision) is resolved once (the Hub's revision endpoint) and the commit recorded; a re-run
    uses the recorded commit and asks the Hub nothing (O(refresh) asks again).
  - Writes a manifest next to the model (file, size, sha256). The sha256 is the Hub's own for LFS files, else computed
    after the file's git blob id was checked against the Hub's. Files that fail either check are not kept.
  - A re-run checks the sizes against the manifest (or every sha256, O(verify=full)); a missing, truncated or
    corrupted file is named in RV(repaired) and fetched again. An interrupted download resumes. The partial file
    (C(blobs/<etag>.incomplete) in the cache) is kept, and the next run asks for the rest with a C(Range) request.
  - Before any byte moves, checks the free disk space against the bytes still to fetch plus O(free_margin).
  - Runs with a Python that has C(huggingface_hub) (the vLLM venv's); only O(source=hub) needs it.
  - Supports check mode (it may ask the Hub, read-only, to learn what would be fetched).
options:
  repo_id:
    description: The model's repo id, C(org/name) (or C(name)).
    type: str
    required: true
  revision:
    description: A commit hash (40 hex digits), or a branch or tag name that is resolved to one once.
    type: str
    default: main
  allow_patterns:
    description: Only files matching one of these glob patterns are staged.
    type: list
    elements: str
  ignore_patterns:
    description: Files matching one of these glob patterns are not staged.
    type: list
    elements: str
  layout:
    description: C(hf_cache) puts the model into the Hugging Face cache under O(hf_home); C(dir) into O(dest).
    type: str
    choices: [hf_cache, dir]
    default: hf_cache
  hf_home:
    description: The Hugging Face home (the cache is its C(hub/) directory); for O(layout=hf_cache).
    type: path
    default: /root/.cache/huggingface
  dest:
    description: The directory the model's files land in, for O(layout=dir).
    type: path
  ref:
    description:
      - For O(layout=hf_cache), the cache ref (C(refs/<ref>)) pointed at the staged commit, so that a server
        started without C(--revision) finds it offline. A branch or tag in O(revision) is also recorded under its name.
    type: str
    default: main
  source:
    description:
      - C(hub) fetches what is missing from the Hub. C(none) only checks what is on the host against its manifest
        (after a copy from a peer or the controller), and fails naming the files that do not match.
      - With C(none), a cache entry that has no manifest yet (copied from a cache made by another tool) is checked
        file by file against its blob's name (the blobs are named by their sha256 or git blob id), and its
        manifest is written.
    type: str
    choices: [hub, none]
    default: hub
  endpoint:
    description: The Hub's URL (a mirror); by default E(HF_ENDPOINT) or C(https://huggingface.co).
    type: str
  token:
    description: The Hub token, for gated or private models. Never logged nor written.
    type: str
  verify:
    description: C(quick) checks that every file is there with its manifest size; C(full) re-hashes every file.
    type: str
    choices: [quick, full]
    default: quick
  refresh:
    description: Ask the Hub again which commit a branch or tag names, instead of the recorded one.
    type: bool
    default: false
  free_margin:
    description: Bytes that must stay free on the destination's file system beyond the bytes to fetch.
    type: int
    default: 1073741824
  progress_file:
    description: A file the module rewrites at intervals while downloading (JSON with bytes done, total and rate).
    type: path
  progress_interval:
    description: Seconds between two writes of O(progress_file).
    type: float
    default: 5
  host:
    description: The name the messages begin with (pass C({{ inventory_hostname }})); by default the host's hostname.
    type: str
author:
  - dgxspark.vllm maintainers (@dgxspark)
"""

EXAMPLES = r"""
- name: Stage gpt-oss-120b at a pinned commit into the server's HF_HOME
  dgxspark.vllm.model_stage:
    repo_id: openai/gpt-oss-120b
    revision: b5c939de8f754692c1647ca79fbf85e8c1e70f8a
    hf_home: /var/lib/vllm/hf
    host: "{{ inventory_hostname }}"
  vars:
    ansible_python_interpreter: /opt/vllm/venv/bin/python

- name: Check a copied model against its manifest, re-hashing every file
  dgxspark.vllm.model_stage:
    repo_id: openai/gpt-oss-120b
    revision: main
    source: none
    verify: full
"""

RETURN = r"""
commit:
  description: The commit staged (the resolved O(revision)).
  returned: success
  type: str
  sample: b5c939de8f754692c1647ca79fbf85e8c1e70f8a
path:
  description: The directory holding the model's files (a snapshot directory, or O(dest)).
  returned: success
  type: str
manifest:
  description: The manifest file's path.
  returned: success
  type: str
files:
  description: How many files the model has (after the patterns).
  returned: success
  type: int
total_bytes:
  description: The model's size.
  returned: success
  type: int
fetched:
  description: The files downloaded by this run (in check mode, those that would be).
  returned: success
  type: list
  elements: str
bytes_fetched:
  description: The bytes those files hold.
  returned: success
  type: int
repaired:
  description: Files that were on the host but missing, truncated or corrupted (each with the reason).
  returned: success
  type: list
  elements: str
verified:
  description: Whether every file matches the manifest (after this run).
  returned: always
  type: bool
updated:
  description: The same as C(changed) (which a role's C(changed_when) may rewrite); in check mode, whether it would change.
  returned: success
  type: bool
resolved_from:
  description: The branch or tag the commit was resolved from, or V(null) for a commit.
  returned: success
  type: str
"""

import fnmatch
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import threading
import time
from urllib.parse import urlsplit

from ansible.module_utils.basic import AnsibleModule

COMMIT = re.compile(r"^[0-9a-f]{40}$")
REPO_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
REF_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
MANIFEST_VERSION = 1
CHUNK = 8 * 1024 * 1024


class StageError(Exception):
    pass


def check_names(repo_id, revision, ref):
    problems = []
    if not REPO_ID.match(repo_id) or ".." in repo_id or repo_id.endswith((".", "-")):
        problems.append("repo_id %r is not a Hugging Face repo id (org/name of letters, digits, '.', '_', '-')" % repo_id)
    for what, value in (("revision", revision), ("ref", ref)):
        if not REF_NAME.match(value) or ".." in value or value.endswith(("/", ".lock")) or "//" in value:
            problems.append("%s %r is neither a commit hash nor a branch or tag name" % (what, value))
    return problems


def hash_file(path):
    """sha256 and git blob id of a file, in one pass."""
    size = os.path.getsize(path)
    sha256 = hashlib.sha256()
    blob = hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            sha256.update(chunk)
            blob.update(chunk)
    return sha256.hexdigest(), blob.hexdigest()


def wanted(name, allow, ignore):
    if allow and not any(fnmatch.fnmatch(name, pattern) for pattern in allow):
        return False
    return not (ignore and any(fnmatch.fnmatch(name, pattern) for pattern in ignore))


class Place:
    """Where a model lives on the host: the HF cache entry or a plain directory, and its manifest."""

    def __init__(self, params):
        self.layout = params["layout"]
        self.repo_id = params["repo_id"]
        if self.layout == "hf_cache":
            self.cache = os.path.join(params["hf_home"], "hub")
            self.repo_dir = os.path.join(self.cache, "models--" + self.repo_id.replace("/", "--"))
        else:
            self.repo_dir = params["dest"]

    def files_dir(self, commit):
        return os.path.join(self.repo_dir, "snapshots", commit) if self.layout == "hf_cache" else self.repo_dir

    def manifest_path(self, commit):
        if self.layout == "hf_cache":
            return os.path.join(self.repo_dir, "dgxspark-manifests", commit + ".json")
        return os.path.join(self.repo_dir, ".dgxspark-manifest.json")

    def recorded_commit(self, revision):
        """The commit a branch or tag was resolved to before (None when never)."""
        if self.layout == "hf_cache":
            value = _read_text(os.path.join(self.repo_dir, "refs", revision))
            return value if value and COMMIT.match(value) else None
        manifest = self.load_any()
        return manifest["commit"] if manifest and manifest.get("resolved_from") == revision else None

    def load_any(self):
        path = self.manifest_path("")
        return _load(path) if self.layout == "dir" else None

    def load(self, commit):
        manifest = _load(self.manifest_path(commit))
        if manifest and manifest.get("commit") == commit and manifest.get("repo_id") == self.repo_id:
            return manifest
        return None

    def incomplete_dir(self):
        if self.layout == "hf_cache":
            return os.path.join(self.repo_dir, "blobs")
        return os.path.join(self.repo_dir, ".dgxspark-incomplete")

    def partial_path(self, commit, name, etag):
        """Where a file downloads to (kept when the download is interrupted, so that the next run resumes)."""
        if self.layout == "hf_cache":
            return os.path.join(self.repo_dir, "blobs", etag + ".incomplete")
        return os.path.join(self.incomplete_dir(), name.replace("/", "--") + "." + etag + ".incomplete")

    def install(self, commit, name, etag, partial):
        """Move a finished download into place: a blob and its snapshot link, or the file itself."""
        path = os.path.join(self.files_dir(commit), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if self.layout == "hf_cache":
            blob = os.path.join(self.repo_dir, "blobs", etag)
            os.chmod(partial, 0o644)
            os.replace(partial, blob)
            if os.path.lexists(path):
                os.unlink(path)
            os.symlink(os.path.relpath(blob, os.path.dirname(path)), path)
        else:
            os.chmod(partial, 0o644)
            os.replace(partial, path)

    def existing_parent(self):
        path = self.repo_dir
        while not os.path.exists(path):
            path = os.path.dirname(path)
        return path

    def drop(self, commit, name, entry):
        """Remove a bad file (and, in the cache, its blob) so that the client fetches it again."""
        path = os.path.join(self.files_dir(commit), name)
        if self.layout == "hf_cache" and os.path.islink(path):
            blob = os.path.realpath(path)
            if os.path.isfile(blob):
                os.unlink(blob)
        if os.path.lexists(path):
            os.unlink(path)

    def write_refs(self, commit, names):
        if self.layout != "hf_cache":
            return
        for name in names:
            ref = os.path.join(self.repo_dir, "refs", name)
            if _read_text(ref) == commit:
                continue  # left as it is: a rewrite would change its time, and a peer copy would see a change
            os.makedirs(os.path.dirname(ref), exist_ok=True)
            _write_atomic(ref, commit)


def _read_text(path):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def _load(path):
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("version") == MANIFEST_VERSION else None


def _write_atomic(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = path + ".partial"
    with open(partial, "w") as handle:
        handle.write(text)
    os.replace(partial, path)


def check_files(place, commit, files, full):
    """The files that do not match the manifest entries, each with the reason: {name: reason}."""
    bad = {}
    base = place.files_dir(commit)
    for name, entry in sorted(files.items()):
        path = os.path.join(base, name)
        if not os.path.isfile(path):
            bad[name] = "missing"
            continue
        size = os.path.getsize(path)
        if size != entry["size"]:
            bad[name] = "size %d, expected %d (truncated or replaced)" % (size, entry["size"])
        elif full or entry.get("sha256") is None:
            sha256, blob = hash_file(path)
            if entry.get("sha256") and sha256 != entry["sha256"]:
                bad[name] = "sha256 %s, expected %s (corrupted)" % (sha256, entry["sha256"])
            elif not entry.get("sha256") and entry.get("oid") and blob != entry["oid"]:
                bad[name] = "git blob id %s, expected %s (corrupted)" % (blob, entry["oid"])
    return bad


class Hub:
    """The real huggingface_hub client, imported only when the Hub is asked."""

    def __init__(self, params, where):
        self.params = params
        self.where = where
        os.environ["HF_HUB_OFFLINE"] = "0"
        os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
        os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
        if params["endpoint"]:
            os.environ["HF_ENDPOINT"] = params["endpoint"]
        try:
            import huggingface_hub
            from huggingface_hub import errors
        except ImportError as exc:
            raise StageError("%s: this Python (%s) has no huggingface_hub (%s); run the module with the vLLM venv's Python"
                             % (where, sys.executable, exc))
        import huggingface_hub.file_download  # noqa: F401 - http_get, the client's resumable download

        # read at each download: smaller chunks keep more of a dropped download (and make the progress finer)
        huggingface_hub.constants.DOWNLOAD_CHUNK_SIZE = 1024 * 1024
        self.hf = huggingface_hub
        self.errors = errors
        self.endpoint = params["endpoint"] or huggingface_hub.constants.ENDPOINT
        self.token = params["token"] or False

    def explain(self, exc, revision):
        e = self.errors
        repo = self.params["repo_id"]
        if isinstance(exc, e.GatedRepoError):
            text = ("model %s is gated: %s refused it without access (%s); give a token of an account that accepted its terms"
                    % (repo, self.endpoint, "no token was given" if not self.token else "the token has no access"))
        elif isinstance(exc, e.RepositoryNotFoundError):
            text = "model %s does not exist on %s (or it is private and %s)" % (
                repo, self.endpoint, "no token was given" if not self.token else "the token cannot see it")
        elif isinstance(exc, e.RevisionNotFoundError):
            text = "revision %s of model %s does not exist on %s" % (revision, repo, self.endpoint)
        elif isinstance(exc, e.RemoteEntryNotFoundError):
            text = "a file of %s at %s is not on %s: %s" % (repo, revision, self.endpoint, _first_line(exc))
        else:
            text = "could not get %s at %s from %s: %s: %s" % (repo, revision, self.endpoint, type(exc).__name__, _first_line(exc))
        if self.token:
            text = text.replace(self.token, "<token>")
        return "%s: %s" % (self.where, text)

    def info(self, revision):
        """(commit, {name: entry}) of the repo at revision, the Hub's sizes and hashes."""
        api = self.hf.HfApi(endpoint=self.endpoint, token=self.token)
        try:
            info = api.model_info(self.params["repo_id"], revision=revision, files_metadata=True)
        except Exception as exc:  # noqa: BLE001 - every client error becomes the host's message
            raise StageError(self.explain(exc, revision))
        files = {}
        for sibling in info.siblings or []:
            if not wanted(sibling.rfilename, self.params["allow_patterns"], self.params["ignore_patterns"]):
                continue
            lfs = sibling.lfs
            files[sibling.rfilename] = {
                "size": lfs.size if lfs else sibling.size,
                "sha256": lfs.sha256 if lfs else None,
                "oid": None if lfs else sibling.blob_id,
                "sha256_from": "hub-lfs" if lfs else "computed",
            }
        return info.sha, files

    def fetch(self, place, commit, name, size):
        """Download one file with the client's own HTTP download (http_get), resuming a partial file with Range.

        huggingface_hub 2.x's hf_hub_download writes to a file unique to each call and deletes it when the call
        fails, so an interrupted download would start over; the module keeps its partial file instead."""
        hf = self.hf
        try:
            url = hf.hf_hub_url(self.params["repo_id"], name, revision=commit, endpoint=self.endpoint)
            meta = hf.get_hf_file_metadata(url, token=self.token)
            etag = (meta.etag or "").strip('"').replace("W/", "")
            if not etag or meta.size != size:
                raise StageError("%s: %s of %s at %s: the Hub's metadata (etag %r, size %s) does not match the manifest's size %d"
                                 % (self.where, name, self.params["repo_id"], commit, etag, meta.size, size))
            partial = place.partial_path(commit, name, etag)
            os.makedirs(os.path.dirname(partial), exist_ok=True)
            same_host = urlsplit(meta.location).netloc == urlsplit(url).netloc
            headers = hf.utils.build_hf_headers(token=self.token if same_host else False)
            with open(partial, "ab") as handle:
                resume = handle.tell()
                if resume > size:
                    handle.truncate(0)
                    resume = 0
                hf.file_download.http_get(meta.location, handle, resume_size=resume, headers=headers, expected_size=size)
        except StageError:
            raise
        except Exception as exc:  # noqa: BLE001 - every client error becomes the host's message
            raise StageError(self.explain(exc, commit))
        place.install(commit, name, etag, partial)


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Progress:
    """Rewrites the progress file at intervals while files download: bytes done of total, rate."""

    def __init__(self, path, interval, place, repo_id, total):
        self.path, self.interval, self.place, self.repo_id, self.total = path, interval, place, repo_id, total
        self.done = 0
        self.current = None
        self.started = time.time()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        if self.path:
            self.write()
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.path:
            if self.thread.is_alive():
                self.thread.join()
            self.write(finished=True)

    def _partial_bytes(self):
        total = 0
        base = self.place.incomplete_dir()
        for top, _dirs, names in os.walk(base) if os.path.isdir(base) else ():
            for name in names:
                if name.endswith(".incomplete"):
                    try:
                        total += os.path.getsize(os.path.join(top, name))
                    except OSError:
                        pass
        return total

    def write(self, finished=False):
        done = self.done if finished else min(self.total, self.done + self._partial_bytes())
        elapsed = max(time.time() - self.started, 1e-6)
        _write_atomic(self.path, json.dumps({
            "repo_id": self.repo_id, "bytes_done": done, "bytes_total": self.total, "file": self.current,
            "rate_bytes_per_s": int(done / elapsed), "elapsed_s": round(elapsed, 1), "finished": finished}))

    def _run(self):
        while not self.stop.wait(self.interval):
            self.write()


def stage(module, where):
    params = module.params
    place = Place(params)
    revision = params["revision"]
    resolved_from = None if COMMIT.match(revision) else revision
    hub = None
    commit = revision if resolved_from is None else (None if params["refresh"] else place.recorded_commit(revision))
    manifest = place.load(commit) if commit else None
    if manifest is None and params["source"] != "hub":
        return adopt(module, place, commit, revision, resolved_from, where)
    if manifest is None:
        hub = Hub(params, where)
        commit, files = hub.info(revision)
        if not files:
            raise StageError("%s: model %s at %s has no file that the allow/ignore patterns keep" % (where, params["repo_id"], revision))
        manifest = {"version": MANIFEST_VERSION, "repo_id": params["repo_id"], "commit": commit,
                    "resolved_from": resolved_from, "files": files}
        bad = check_files(place, commit, files, full=True)
        repaired = []
    else:
        files = manifest["files"]
        bad = check_files(place, commit, files, full=params["verify"] == "full")
        repaired = ["%s: %s" % (name, reason) for name, reason in sorted(bad.items())]
    total = sum(entry["size"] for entry in files.values())
    need = sorted(bad)
    needed_bytes = sum(files[name]["size"] for name in need)
    result = {"commit": commit, "path": place.files_dir(commit), "manifest": place.manifest_path(commit),
              "files": len(files), "total_bytes": total, "fetched": need, "bytes_fetched": needed_bytes,
              "repaired": repaired, "resolved_from": resolved_from or manifest.get("resolved_from")}
    manifest_missing = place.load(commit) is None
    if not need and not manifest_missing:
        if not module.check_mode:
            place.write_refs(commit, refs_to_write(params, resolved_from))
        return dict(result, changed=False, updated=False, verified=True,
                    msg="%s: %s at %s: %d files, %d bytes, verified (%s)" % (where, params["repo_id"], commit, len(files), total, params["verify"]))
    if need and params["source"] != "hub":
        raise StageError("%s: model %s at %s does not match its manifest: %s" % (where, params["repo_id"], commit, "; ".join(repaired)))
    free = shutil.disk_usage(place.existing_parent()).free
    if needed_bytes + params["free_margin"] > free:
        raise StageError("%s: not enough disk for model %s at %s: %d bytes to fetch plus a margin of %d, but %s has %d bytes free"
                         % (where, params["repo_id"], commit, needed_bytes, params["free_margin"], place.existing_parent(), free))
    if module.check_mode:
        return dict(result, changed=True, updated=True, verified=False,
                    msg="%s: %s at %s: would fetch %d files, %d bytes" % (where, params["repo_id"], commit, len(need), needed_bytes))
    hub = hub or Hub(params, where)
    for name in need:
        place.drop(commit, name, files[name])
    with Progress(params["progress_file"], params["progress_interval"], place, params["repo_id"], needed_bytes) as progress:
        for name in need:
            progress.current = name
            hub.fetch(place, commit, name, files[name]["size"])
            progress.done += files[name]["size"]
    still = check_files(place, commit, {name: files[name] for name in need}, full=True)
    if still:
        for name in still:
            place.drop(commit, name, files[name])
        raise StageError("%s: model %s at %s: downloaded files do not match the Hub's metadata (removed): %s"
                         % (where, params["repo_id"], commit, "; ".join("%s: %s" % item for item in sorted(still.items()))))
    for name, entry in files.items():
        if entry.get("sha256") is None:  # a regular git file: its blob id was checked, its sha256 is computed here
            entry["sha256"] = hash_file(os.path.join(place.files_dir(commit), name))[0]
    manifest["staged_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _write_atomic(place.manifest_path(commit), json.dumps(manifest, indent=1, sort_keys=True))
    place.write_refs(commit, refs_to_write(params, resolved_from))
    return dict(result, changed=True, updated=True, verified=True,
                msg="%s: %s at %s: fetched %d of %d files, %d bytes; verified" % (where, params["repo_id"], commit, len(need), len(files), needed_bytes))


def adopt(module, place, commit, revision, resolved_from, where):
    """source=none without a manifest: a cache entry copied from elsewhere. Its blobs are named by their content
    (sha256, or the git blob id of small files), so each file is checked against its own blob's name."""
    params = module.params
    snapshot = place.files_dir(commit) if commit else None
    if place.layout != "hf_cache" or not snapshot or not os.path.isdir(snapshot):
        raise StageError("%s: model %s at %s is not staged (no manifest at %s, no snapshot to check): source=none only checks"
                         % (where, params["repo_id"], revision, place.manifest_path(commit or "<commit>")))
    files, bad = {}, {}
    for top, _dirs, names in os.walk(snapshot):
        for item in names:
            path = os.path.join(top, item)
            name = os.path.relpath(path, snapshot)
            if not wanted(name, params["allow_patterns"], params["ignore_patterns"]):
                continue
            blob = os.path.basename(os.path.realpath(path))
            if not os.path.isfile(path):
                bad[name] = "missing (its blob %s is not there)" % blob
                continue
            sha256, oid = hash_file(path)
            if blob not in (sha256, oid):
                bad[name] = "content (sha256 %s) does not match its blob's name %s (corrupted)" % (sha256, blob)
            files[name] = {"size": os.path.getsize(path), "sha256": sha256, "oid": oid, "sha256_from": "blob-name"}
    if bad or not files:
        raise StageError("%s: model %s at %s (%s) cannot be verified: %s" % (
            where, params["repo_id"], commit, snapshot, "; ".join("%s: %s" % item for item in sorted(bad.items())) or "no files"))
    total = sum(entry["size"] for entry in files.values())
    result = {"commit": commit, "path": snapshot, "manifest": place.manifest_path(commit), "files": len(files),
              "total_bytes": total, "fetched": [], "bytes_fetched": 0, "repaired": [], "resolved_from": resolved_from,
              "changed": True, "updated": True, "verified": True}
    if not module.check_mode:
        manifest = {"version": MANIFEST_VERSION, "repo_id": params["repo_id"], "commit": commit, "resolved_from": resolved_from,
                    "files": files, "staged_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        _write_atomic(place.manifest_path(commit), json.dumps(manifest, indent=1, sort_keys=True))
        place.write_refs(commit, refs_to_write(params, resolved_from))
    return dict(result, msg="%s: %s at %s: %d files, %d bytes, each matching its blob; manifest written" % (
        where, params["repo_id"], commit, len(files), total))


def refs_to_write(params, resolved_from):
    return sorted({params["ref"]} | ({resolved_from} if resolved_from else set()))


def main():
    module = AnsibleModule(
        argument_spec={
            "repo_id": {"type": "str", "required": True},
            "revision": {"type": "str", "default": "main"},
            "allow_patterns": {"type": "list", "elements": "str"},
            "ignore_patterns": {"type": "list", "elements": "str"},
            "layout": {"type": "str", "choices": ["hf_cache", "dir"], "default": "hf_cache"},
            "hf_home": {"type": "path", "default": "/root/.cache/huggingface"},
            "dest": {"type": "path"},
            "ref": {"type": "str", "default": "main"},
            "source": {"type": "str", "choices": ["hub", "none"], "default": "hub"},
            "endpoint": {"type": "str"},
            "token": {"type": "str", "no_log": True},
            "verify": {"type": "str", "choices": ["quick", "full"], "default": "quick"},
            "refresh": {"type": "bool", "default": False},
            "free_margin": {"type": "int", "default": 1073741824},
            "progress_file": {"type": "path"},
            "progress_interval": {"type": "float", "default": 5},
            "host": {"type": "str"},
        },
        required_if=[("layout", "dir", ["dest"])],
        supports_check_mode=True,
    )
    params = module.params
    where = params["host"] or platform.node()
    problems = check_names(params["repo_id"], params["revision"], params["ref"])
    if params["free_margin"] < 0:
        problems.append("free_margin %d is negative" % params["free_margin"])
    if problems:
        module.fail_json(msg="%s: %s" % (where, "; ".join(problems)), verified=False)
    try:
        module.exit_json(**stage(module, where))
    except StageError as exc:
        module.fail_json(msg=str(exc), verified=False)


if __name__ == "__main__":
    main()
