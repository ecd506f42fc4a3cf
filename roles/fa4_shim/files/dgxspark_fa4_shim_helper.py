# -*- coding: utf-8 -*-
# Copyright: dgxspark.vllm contributors
# Apache License 2.0 (see LICENSE)
"""Helper that the fa4_shim role runs with the venv's own Python. Prints one JSON object.

Subcommands:
  seed SITE_PACKAGES
      Which of the seed recipe's experimental files are there, which of them are the seed's
      (and may be removed) and which files would still import the old shim afterwards.
  packages --want JSON [--pinned-by vllm]
      Which wanted requirements are not satisfied, and the constraints that keep every package
      the pinning distribution requires at its installed version. Read-only.
  kernel-check DIR SUBDIR
      Whether DIR holds the kernel package at DIR/SUBDIR (read-only; imports nothing).
  kernel-fetch --repo R --revision REV --dest DIR --subdir SUBDIR [--repo-type T] [--check]
      Download the Hugging Face repo at REV into DIR (through DIR.partial, renamed when complete),
      unless DIR already holds that revision. HF_TOKEN and HF_ENDPOINT come from the environment.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import sys

SEED_PTH = "zzz_fa4_sm120_shim.pth"
SEED_MODULE = "fa4_sm120_shim.py"
SITECUSTOMIZE = "sitecustomize.py"
SEED_NAME = "fa4_sm120_shim"
# The seed's shim module: its kill switch, the kernel repo it loads and its import hook.
SEED_FINGERPRINTS = ("FA4_SM120_SHIM", "flash-attn-4-sm120", "meta_path")
MARKER = ".dgxspark-kernel.json"


def emit(data, rc=0):
    print(json.dumps(data, sort_keys=True))
    sys.exit(rc)


# --------------------------------------------------------------------------- seed files

def _read(path):
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read()


def _pth_only_imports_seed(text):
    lines = [line.strip() for line in text.splitlines()]
    body = [line for line in lines if line and not line.startswith("#")]
    pattern = re.compile(r"^import\s+%s\s*(;\s*)?(#.*)?$" % SEED_NAME)
    return bool(body) and all(pattern.match(line) for line in body)


def _imports_only_seed(node):
    if isinstance(node, ast.Import):
        return all(alias.name == SEED_NAME for alias in node.names)
    if isinstance(node, ast.ImportFrom):
        return node.module == SEED_NAME
    return False


def _sitecustomize_only_seed(text):
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return False
    seen = False
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue  # docstring
        if _imports_only_seed(node):
            seen = True
            continue
        if isinstance(node, ast.Try):
            inner = [n for n in node.body if not isinstance(n, ast.Pass)]
            handlers_pass = all(all(isinstance(n, ast.Pass) for n in h.body) for h in node.handlers)
            if inner and all(_imports_only_seed(n) for n in inner) and handlers_pass and not node.orelse \
                    and not node.finalbody:
                seen = True
                continue
        return False
    return seen


def seed(site_packages):
    result = {"present": [], "remove": [], "keep": [], "conflicts": []}
    for name in (SEED_PTH, SEED_MODULE, SITECUSTOMIZE):
        path = os.path.join(site_packages, name)
        if not os.path.isfile(path):
            continue
        text = _read(path)
        if name == SITECUSTOMIZE and SEED_NAME not in text:
            continue  # somebody else's sitecustomize: none of our business
        result["present"].append(path)
        if name == SEED_PTH:
            ours = _pth_only_imports_seed(text)
            why = "it holds more than the line 'import %s'" % SEED_NAME
        elif name == SEED_MODULE:
            ours = all(mark in text for mark in SEED_FINGERPRINTS)
            why = "it lacks the seed shim's fingerprints (%s)" % ", ".join(SEED_FINGERPRINTS)
        else:
            ours = _sitecustomize_only_seed(text)
            why = "it runs other code besides importing %s" % SEED_NAME
        if ours:
            result["remove"].append(path)
        else:
            result["keep"].append({"path": path, "reason": why})
    if any(p.endswith(SEED_MODULE) for p in result["remove"]):
        # Nothing left behind may still import the module that goes away.
        removed = set(result["remove"])
        names = [n for n in os.listdir(site_packages) if n.endswith(".pth") or n in (SITECUSTOMIZE, "usercustomize.py")]
        for name in sorted(names):
            path = os.path.join(site_packages, name)
            if path not in removed and os.path.isfile(path) and SEED_NAME in _read(path):
                result["conflicts"].append(path)
    return result


# --------------------------------------------------------------------------- packages

def _canon(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _packaging():
    try:
        from packaging.requirements import Requirement
        from packaging.version import Version
        return Requirement, Version, "packaging"
    except ImportError:
        pass
    try:
        from pip._vendor.packaging.requirements import Requirement
        from pip._vendor.packaging.version import Version
        return Requirement, Version, "pip._vendor.packaging"
    except ImportError:
        return None, None, None


def packages(want, pinned_by):
    from importlib import metadata

    Requirement, _Version, parser = _packaging()
    if Requirement is None:
        emit({"failed": True, "msg": "neither packaging nor pip is importable in %s; cannot compare requirements"
              % sys.executable}, 1)
    installed = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name")
        if name:
            installed.setdefault(_canon(name), dist.version)

    unsatisfied = []
    for spec in want:
        req = Requirement(spec)
        have = installed.get(_canon(req.name))
        if have is None or (req.specifier and not req.specifier.contains(have, prereleases=True)):
            unsatisfied.append(spec)

    # Every installed distribution that vLLM requires is held at its installed version. (Requirements that are
    # not installed - a venv made with --no-deps - constrain nothing: there is nothing of vLLM's to move.)
    constraints, pinned, absent = [], {}, []
    try:
        requires = metadata.requires(pinned_by) or []
    except metadata.PackageNotFoundError:
        requires = None
    for line in requires or []:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = _canon(req.name)
        if name in installed:
            pinned[name] = installed[name]
            constraints.append("%s==%s" % (name, installed[name]))
        else:
            absent.append(str(req))
    return {"python": sys.executable, "parser": parser, "pinned_by": pinned_by,
            "pinned_by_version": installed.get(_canon(pinned_by)), "found_pinning": requires is not None,
            "unsatisfied": unsatisfied, "constraints": sorted(set(constraints)), "pinned": pinned,
            "requirements_not_installed": sorted(absent),
            "versions": {_canon(Requirement(s).name): installed.get(_canon(Requirement(s).name)) for s in want}}


# --------------------------------------------------------------------------- kernel

def kernel_check(directory, subdir):
    package = os.path.join(directory, subdir)
    problems = []
    if not os.path.isdir(directory):
        problems.append("%s is not a directory" % directory)
    else:
        for name in ("__init__.py", "interface.py"):
            if not os.path.isfile(os.path.join(package, name)):
                problems.append("%s is missing" % os.path.join(package, name))
        iface = os.path.join(package, "interface.py")
        if os.path.isfile(iface) and "def _flash_attn_fwd" not in _read(iface):
            problems.append("%s defines no _flash_attn_fwd" % iface)
    marker = None
    try:
        with open(os.path.join(directory, MARKER)) as handle:
            marker = json.load(handle)
    except (OSError, ValueError):
        pass
    return {"ok": not problems, "problems": problems, "package_dir": package, "marker": marker}


def _make_readable(root):
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o644)


def kernel_fetch(args):
    want = {"repo": args.repo, "revision": args.revision, "subdir": args.subdir, "repo_type": args.repo_type}
    current = kernel_check(args.dest, args.subdir)
    marker = current["marker"] or {}
    if current["ok"] and all(marker.get(k) == v for k, v in want.items()):
        return {"changed": False, "dest": args.dest, "msg": "%s already holds %s at %s" % (args.dest, args.repo, args.revision)}
    if args.check:
        return {"changed": True, "dest": args.dest, "msg": "would download %s at %s" % (args.repo, args.revision)}
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        emit({"failed": True, "msg": "huggingface_hub is not importable in %s (%s); install the role's packages first"
              % (sys.executable, exc)}, 1)
    partial = args.dest + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(os.path.dirname(args.dest) or ".", exist_ok=True)
    try:
        snapshot_download(repo_id=args.repo, revision=args.revision, repo_type=args.repo_type, local_dir=partial)
    except Exception as exc:
        shutil.rmtree(partial, ignore_errors=True)
        emit({"failed": True, "msg": "downloading %s (%s) at %s failed: %s: %s"
              % (args.repo, args.repo_type, args.revision, type(exc).__name__, exc)}, 1)
    shutil.rmtree(os.path.join(partial, ".cache"), ignore_errors=True)  # huggingface_hub's download metadata
    check = kernel_check(partial, args.subdir)
    if not check["ok"]:
        shutil.rmtree(partial, ignore_errors=True)
        emit({"failed": True, "msg": "%s at %s does not have the expected layout: %s"
              % (args.repo, args.revision, "; ".join(check["problems"]))}, 1)
    import compileall
    compileall.compile_dir(check["package_dir"], quiet=1)
    with open(os.path.join(partial, MARKER), "w") as handle:
        json.dump(want, handle, sort_keys=True)
        handle.write("\n")
    _make_readable(partial)
    if os.path.lexists(args.dest):
        old = args.dest + ".old"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(args.dest, old)
        os.rename(partial, args.dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(partial, args.dest)
    files = sum(len(f) for _dirpath, _dirnames, f in os.walk(args.dest))
    return {"changed": True, "dest": args.dest, "files": files,
            "msg": "downloaded %s at %s into %s" % (args.repo, args.revision, args.dest)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("seed")
    p.add_argument("site_packages")
    p = sub.add_parser("packages")
    p.add_argument("--want", required=True, help="JSON list of requirements")
    p.add_argument("--pinned-by", default="vllm")
    p = sub.add_parser("kernel-check")
    p.add_argument("dir")
    p.add_argument("subdir")
    p = sub.add_parser("kernel-fetch")
    p.add_argument("--repo", required=True)
    p.add_argument("--revision", required=True)
    p.add_argument("--dest", required=True)
    p.add_argument("--subdir", required=True)
    p.add_argument("--repo-type", default="model")
    p.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "seed":
        emit(seed(args.site_packages))
    if args.command == "packages":
        emit(packages(json.loads(args.want), args.pinned_by))
    if args.command == "kernel-check":
        emit(kernel_check(args.dir, args.subdir))
    emit(kernel_fetch(args))


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception as exc:  # the role reads stdout as JSON in every case
        emit({"failed": True, "msg": "%s failed: %s: %s" % (" ".join(sys.argv[1:2]), type(exc).__name__, exc)}, 1)
