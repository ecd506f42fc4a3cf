# -*- coding: utf-8 -*-
# Copyright: dgxspark.vllm contributors
# Apache License 2.0 (see LICENSE)
"""Plain functions behind the fa2_native role: which flash-attention commit a vLLM pins, how FA's
CMakeLists.txt resolves its FA2 arch list, how to patch it for native SM12x code, and the build key.

Everything here is pure (text in, values out) so that it can be unit tested without CUDA.
The arch-list model follows flash-attention's cmake (see FACTS.md section 3):

* the target list (``-DCUDA_ARCHS`` or torch's gencode flags) is loosely intersected with
  ``CUDA_SUPPORTED_ARCHS`` first, so a target 12.1 becomes 12.0 when 12.1 is not supported;
* FA2's list (stock ``"8.0+PTX"``) is then loosely intersected with that result.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re

# flash-attention commits pinned by vLLM releases: the GIT_TAG of cmake/external_projects/vllm_flash_attn.cmake in
# each release's sdist on PyPI (tests/unit/plugins/module_utils/test_fa2_pins_from_sdists.py checks every entry
# against the sdists). Exact releases only: a later patch release may move the pin, so it is not guessed from its
# series (the role then asks for fa2_native_commit). Callers may add series keys ("0.34") in their own table.
FA_COMMITS = {
    "0.24.0": "803020a8fa15407871341d41eba4919ade2ee1ee",
    "0.25.0": "2c839c33742309ec41e620bf837495ec9926c56e",
    "0.25.1": "2c839c33742309ec41e620bf837495ec9926c56e",
    "0.26.0": "caaa4eb59845388a20b1f435ecaafb4bd9517ad8",
    "0.27.0": "28e862d21806bc3580207aa0ad4e2759151e9827",
    "0.27.1": "28e862d21806bc3580207aa0ad4e2759151e9827",
    "0.28.0": "f3e1a4f74c99145c0717709860bf765de1703779",
    "0.29.0": "06bdd47c0d0383daf6a2ff0c418faff9c6da16e5",
    "0.30.0": "506341a143fcabd4bb79052a7605ada727d6b3f5",
    "0.31.0": "9cd61de38763d712bb6ce56e2a02cc2bf718c89f",
    "0.32.0": "9cd61de38763d712bb6ce56e2a02cc2bf718c89f",
    "0.33.0": "b273a02621d3c94bc747df67204f591b67f38fae",
}

ARCH_RE = re.compile(r"^(\d{1,2})\.(\d)a?$")
_SUPPORTED_SET_RE = re.compile(r'^(?P<indent>\s*)set\(\s*CUDA_SUPPORTED_ARCHS\s+"(?P<archs>[^"]*)"\s*\)', re.M)
_APPEND_RE = re.compile(r'^(?P<indent>\s*)list\(\s*APPEND\s+CUDA_SUPPORTED_ARCHS(?P<args>(?:\s+"[^"]*")+)\s*\)\s*$')
_BRANCH_RE = re.compile(
    r"^\s*(?P<kw>if|elseif)\s*\(\s*\$\{CMAKE_CUDA_COMPILER_VERSION\}\s+VERSION_GREATER_EQUAL\s+(?P<ver>[0-9.]+)\s*\)\s*$")
_ELSE_RE = re.compile(r"^\s*else\s*\(\s*\)\s*$")
_ENDIF_RE = re.compile(r"^\s*endif\s*\(\s*\)\s*$")
_FA2_RE = re.compile(
    r'^(?P<head>\s*cuda_archs_loose_intersection\(\s*FA2_ARCHS\s+)"(?P<archs>[^"]*)"(?P<tail>\s+"\$\{CUDA_ARCHS\}"\s*\).*)$',
    re.M)
_GIT_TAG_RE = re.compile(r"^\s*GIT_TAG\s+(?P<tag>[^\s)]+)", re.M)
_GIT_REPO_RE = re.compile(r"^\s*GIT_REPOSITORY\s+(?P<url>[^\s)]+)", re.M)
_NIGHTLY_RE = re.compile(r"\+(?:[0-9a-z]+\.)*g(?P<sha>[0-9a-f]{7,40})(?:\.|$)")
_RELEASE_RE = re.compile(r"^(?P<major>\d+)\.(?P<minor>\d+)(?:\.(?P<patch>\d+))?")

# Skipped when fingerprinting a local source tree: VCS data, build trees, ROCm-only submodules.
FINGERPRINT_SKIP_DIRS = {".git", "build", "__pycache__", "composable_kernel", "aiter", ".deps"}


class Fa2SourceError(Exception):
    """A source tree, version or arch value that the role cannot use; the message says why."""


# ----------------------------------------------------------------------------------------------
# arch lists


def _ver(arch):
    major, minor = arch.split(".")
    return (int(major), int(minor.rstrip("a")))


def normalize_arch(value):
    """'12.1', '12.1a' or ' 8.0 ' -> '12.1' / '8.0'. FA2 uses no arch-specific ('a') features."""
    text = str(value).strip()
    match = ARCH_RE.match(text)
    if not match:
        raise Fa2SourceError("arch %r is not a compute capability like '12.1' or '8.0'" % (value,))
    return "%d.%s" % (int(match.group(1)), match.group(2))


def normalize_archs(values):
    """A list (or a ';'/','/space separated string) of archs -> sorted unique list of 'X.Y'."""
    if isinstance(values, str):
        values = [v for v in re.split(r"[;,\s]+", values) if v]
    archs = {normalize_arch(v) for v in values}
    if not archs:
        raise Fa2SourceError("the target arch list is empty")
    return sorted(archs, key=_ver)


def desired_fa2_list(archs, ptx=False):
    """The FA2 arch list to configure: the sorted targets; '+PTX' on the highest when ptx is asked."""
    archs = normalize_archs(archs)
    if ptx:
        archs[-1] = archs[-1] + "+PTX"
    return archs


def split_list(text):
    """A CMake list string '8.0;9.0' (or ' "8.0" "9.0"' arguments) -> ['8.0', '9.0']."""
    return [item for item in re.split(r'[;\s"]+', text or "") if item]


def loose_intersection(src, tgt):
    """Python model of FA's cuda_archs_loose_intersection(OUT SRC TGT).

    For each target T, keep the highest plain source arch S <= T that shares T's major version, or
    any S <= T that carries '+PTX' (the result keeps '+PTX'). An 'a' source arch (9.0a) is kept only
    when its plain form is a target. A trailing 'a' on a target is ignored. Duplicates are dropped.
    """
    plain, ptx, result = [], set(), []
    targets = list(tgt)
    for arch in src:
        if not arch:
            continue
        if arch.endswith("+PTX"):
            base = arch[:-4]
            ptx.add(base)
            plain.append(base)
        elif arch.endswith("a"):
            base = arch[:-1]
            if base in targets:
                result.append(arch)
                targets = [t for t in targets if t != base]
        else:
            plain.append(arch)
    plain = sorted(set(plain), key=_ver)
    for target in targets:
        t_ver = _ver(target.rstrip("a"))
        best = None
        for arch in plain:
            a_ver = _ver(arch)
            if a_ver > t_ver:
                break
            if a_ver[0] == t_ver[0] or arch in ptx:
                best = arch
        if best is not None:
            result.append(best + "+PTX" if best in ptx else best)
    unique = []
    for arch in result:
        if arch not in unique:
            unique.append(arch)
    return unique


# ----------------------------------------------------------------------------------------------
# CMakeLists.txt


def parse_cmakelists(text):
    """Find the lines the patch works on. Raises Fa2SourceError naming each line that is missing.

    Returns a dict: lines (the text split, newlines kept), supported_index and supported (the
    ``set(CUDA_SUPPORTED_ARCHS ...)`` line), branches (list of {min_version, kind, appends: [{index,
    archs}]} for the ``if/elseif (${CMAKE_CUDA_COMPILER_VERSION} VERSION_GREATER_EQUAL x)`` block that
    follows it), fa2_index and fa2 (the list in ``cuda_archs_loose_intersection(FA2_ARCHS ...)``).
    """
    lines = text.splitlines(keepends=True)
    missing = []
    supported_index = fa2_index = None
    for index, line in enumerate(lines):
        if supported_index is None and _SUPPORTED_SET_RE.match(line):
            supported_index = index
        if fa2_index is None and _FA2_RE.match(line):
            fa2_index = index
    if supported_index is None:
        missing.append('set(CUDA_SUPPORTED_ARCHS "...")')
    if fa2_index is None:
        missing.append('cuda_archs_loose_intersection(FA2_ARCHS "..." "${CUDA_ARCHS}")')
    if missing:
        raise Fa2SourceError("expected line(s) not found in CMakeLists.txt: %s" % "; ".join(missing))

    supported = split_list(_SUPPORTED_SET_RE.match(lines[supported_index]).group("archs"))
    branches = []
    index = supported_index + 1
    while index < len(lines) and not lines[index].strip():
        index += 1
    if index < len(lines) and _BRANCH_RE.match(lines[index]) and _BRANCH_RE.match(lines[index]).group("kw") == "if":
        current = None
        while index < len(lines):
            line = lines[index]
            branch = _BRANCH_RE.match(line)
            if branch:
                current = {"min_version": branch.group("ver"), "kind": branch.group("kw"), "line": index, "appends": []}
                branches.append(current)
            elif _ELSE_RE.match(line):
                current = {"min_version": None, "kind": "else", "line": index, "appends": []}
                branches.append(current)
            elif _ENDIF_RE.match(line):
                break
            else:
                append = _APPEND_RE.match(line)
                if append and current is not None:
                    current["appends"].append({"index": index, "archs": split_list(append.group("args"))})
            index += 1
        else:
            raise Fa2SourceError("no endif() closes the CUDA_SUPPORTED_ARCHS version block in CMakeLists.txt")
    return {
        "lines": lines,
        "supported_index": supported_index,
        "supported": supported,
        "branches": branches,
        "fa2_index": fa2_index,
        "fa2": split_list(_FA2_RE.match(lines[fa2_index]).group("archs")),
    }


def _version_tuple(text):
    return tuple(int(part) for part in str(text).split(".") if part.isdigit())


def active_branch(parsed, cuda_version):
    """The version branch CMake takes for this nvcc version (None when none applies)."""
    have = _version_tuple(cuda_version)
    for branch in parsed["branches"]:
        if branch["min_version"] is None or have >= _version_tuple(branch["min_version"]):
            return branch
    return None


def supported_archs(parsed, cuda_version):
    """CUDA_SUPPORTED_ARCHS as CMake would compute it with this nvcc version."""
    archs = list(parsed["supported"])
    branch = active_branch(parsed, cuda_version)
    if branch:
        for append in branch["appends"]:
            archs.extend(append["archs"])
    return archs


def simulate(text, target_archs, cuda_version):
    """What configure would print: {'cuda_archs': [...], 'fa2_archs': [...]} for these targets."""
    parsed = text if isinstance(text, dict) else parse_cmakelists(text)
    targets = normalize_archs(target_archs)
    cuda_archs = loose_intersection(supported_archs(parsed, cuda_version), targets)
    return {"cuda_archs": cuda_archs, "fa2_archs": loose_intersection(parsed["fa2"], cuda_archs)}


def _quote_args(archs):
    return " ".join('"%s"' % arch for arch in archs)


def patch_cmakelists(text, target_archs, cuda_version, ptx=False):
    """Make FA2 compile natively for target_archs. Returns (new_text, info).

    info: desired (the FA2 list wanted), before / after (FA2_ARCHS that configure would print before
    and after), changes (one line per edit), status 'unchanged' (the source already gives the desired
    list, e.g. upstream PR #196 or a second run) or 'patched'.

    Edits, only where needed: the target archs missing from CUDA_SUPPORTED_ARCHS for this CUDA version
    are appended to the ``list(APPEND ...)`` of the active version branch (or to the ``set(...)`` line
    when there is no branch), and the FA2 line gets the desired list.
    """
    targets = normalize_archs(target_archs)
    desired = desired_fa2_list(targets, ptx)
    parsed = parse_cmakelists(text)
    before = simulate(parsed, targets, cuda_version)["fa2_archs"]
    info = {"desired": desired, "before": before, "after": before, "changes": [], "status": "unchanged"}
    if before == desired:
        return text, info

    lines = list(parsed["lines"])
    have = supported_archs(parsed, cuda_version)
    missing = [arch for arch in targets if arch not in have]
    if missing:
        branch = active_branch(parsed, cuda_version)
        if branch and branch["appends"]:
            index = branch["appends"][-1]["index"]
            match = _APPEND_RE.match(lines[index].rstrip("\r\n"))
            archs = split_list(match.group("args")) + missing
            ending = lines[index][len(lines[index].rstrip("\r\n")):]
            lines[index] = "%slist(APPEND CUDA_SUPPORTED_ARCHS %s)%s" % (match.group("indent"), _quote_args(archs), ending)
            where = "CUDA >= %s branch" % branch["min_version"] if branch["min_version"] else "else() branch"
        elif branch:
            raise Fa2SourceError(
                "the CUDA_SUPPORTED_ARCHS branch taken for CUDA %s (line %d) has no list(APPEND CUDA_SUPPORTED_ARCHS ...) line"
                % (cuda_version, branch["line"] + 1))
        else:
            index = parsed["supported_index"]
            match = _SUPPORTED_SET_RE.match(lines[index])
            archs = parsed["supported"] + missing
            lines[index] = lines[index].replace(match.group(0), '%sset(CUDA_SUPPORTED_ARCHS "%s")' % (
                match.group("indent"), ";".join(archs)), 1)
            where = "set(CUDA_SUPPORTED_ARCHS) line"
        info["changes"].append("CUDA_SUPPORTED_ARCHS: added %s (%s, line %d)" % (", ".join(missing), where, index + 1))

    fa2_line = lines[parsed["fa2_index"]]
    match = _FA2_RE.match(fa2_line)
    if split_list(match.group("archs")) != desired:
        lines[parsed["fa2_index"]] = fa2_line.replace(
            match.group(0), '%s"%s"%s' % (match.group("head"), ";".join(desired), match.group("tail")), 1)
        info["changes"].append('FA2_ARCHS source list: "%s" -> "%s" (line %d)' % (
            match.group("archs"), ";".join(desired), parsed["fa2_index"] + 1))

    new_text = "".join(lines)
    after = simulate(new_text, targets, cuda_version)["fa2_archs"]
    info["after"] = after
    if after != desired:
        raise Fa2SourceError(
            "patched CMakeLists.txt would still configure FA2_ARCHS=%s, expected %s" % (";".join(after), ";".join(desired)))
    info["status"] = "patched"
    return new_text, info


def unified_diff(before, after, path):
    return "".join(difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), fromfile=path, tofile=path))


# ----------------------------------------------------------------------------------------------
# which flash-attention commit


def parse_vllm_version(version):
    """'0.33.0' -> {'release': '0.33.0', 'series': '0.33', 'nightly_commit': None};
    '0.33.1.dev12+g1a2b3c4d.cu130' -> nightly_commit '1a2b3c4d'."""
    if not version:
        raise Fa2SourceError("no vLLM version: is vLLM installed in the venv?")
    text = str(version).strip()
    match = _RELEASE_RE.match(text)
    if not match:
        raise Fa2SourceError("vLLM version %r is not a version string" % text)
    nightly = _NIGHTLY_RE.search(text)
    release = "%s.%s.%s" % (match.group("major"), match.group("minor"), match.group("patch") or "0")
    return {
        "version": text,
        "release": release,
        "series": "%s.%s" % (match.group("major"), match.group("minor")),
        "nightly_commit": nightly.group("sha") if nightly else None,
        "is_final": re.match(r"^\d+\.\d+(\.\d+)?$", text.split("+")[0]) is not None,
    }


def commit_for_release(version, extra_table=None):
    """The flash-attention commit pinned by a released vLLM, or None when the table has no entry.

    Exact entries ("0.33.0") win over series entries ("0.33"); extra_table entries win over the built-in table.
    """
    info = parse_vllm_version(version)
    table = dict(FA_COMMITS)
    table.update({str(k): str(v) for k, v in (extra_table or {}).items()})
    for key in (info["version"], info["release"], info["series"]):
        if key in table:
            return table[key]
    return None


def parse_git_tag(cmake_text):
    """The GIT_TAG (and GIT_REPOSITORY) of vLLM's cmake/external_projects/vllm_flash_attn.cmake."""
    tag = _GIT_TAG_RE.search(cmake_text or "")
    if not tag:
        raise Fa2SourceError("no GIT_TAG line in vllm_flash_attn.cmake")
    repo = _GIT_REPO_RE.search(cmake_text)
    return {"commit": tag.group("tag"), "repository": repo.group("url") if repo else None}


# ----------------------------------------------------------------------------------------------
# the CUDA driver library the build links against


def _ldconfig_paths(ldconfig_text, names):
    """Paths that `ldconfig -p` lists for the given library file names, in its order."""
    found = []
    for line in (ldconfig_text or "").splitlines():
        name, sep, path = line.strip().partition(" => ")
        if sep and name.split(" ", 1)[0] in names and path.strip() not in found:
            found.append(path.strip())
    return found


def find_cuda_driver_library(cuda_home, ldconfig_text="", machine="x86_64", given="", isfile=os.path.isfile,
                             listdir=os.listdir):
    """The libcuda that _vllm_fa2_C is linked against (CMake's CUDA::cuda_driver), found the way CMake looks.

    flash-attention's cmake/utils.cmake links every extension to CUDA::cuda_driver. CMake's FindCUDAToolkit
    creates that target only when it finds libcuda.so: in the toolkit's library dirs and the system's, then
    in the toolkit's stubs/ dirs. A build host without the NVIDIA driver and with a toolkit that has no stubs
    (one put together from NVIDIA's pip wheels, say) has none, and configure then fails at its generate
    step ("links to target CUDA::cuda_driver but the target was not found").

    Order: ``given`` (the user's file; returned even when missing, so that the caller can name it); a
    libcuda.so in the toolkit's own lib dirs; the driver's library (``ldconfig -p``, then the usual dirs;
    libcuda.so, else libcuda.so.1); the toolkit's stub (``lib64/stubs``, ``lib/stubs``,
    ``targets/*/lib/stubs``). Linking against the stub or the driver records the same dependency
    (libcuda.so.1), which the host that loads the library resolves to its own driver.

    Returns {"path": str or None, "kind": "given" | "toolkit" | "driver" | "stub" | None, "exists": bool,
    "searched": [paths looked at]}.
    """
    searched = []

    def first(kind, candidates):
        for path in candidates:
            if path not in searched:
                searched.append(path)
            if isfile(path):
                return {"path": path, "kind": kind, "exists": True, "searched": searched}
        return None

    if given:
        return {"path": given, "kind": "given", "exists": bool(isfile(given)), "searched": [given]}
    home = (cuda_home or "").rstrip("/")
    target_dirs = []
    if home:
        try:
            target_dirs = sorted(os.path.join(home, "targets", name, "lib") for name in listdir(os.path.join(home, "targets")))
        except OSError:
            target_dirs = []
    toolkit_dirs = [os.path.join(home, "lib64"), os.path.join(home, "lib")] + target_dirs if home else []
    hit = first("toolkit", [os.path.join(d, "libcuda.so") for d in toolkit_dirs])
    if hit:
        return hit
    multiarch = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu", "arm64": "aarch64-linux-gnu"}.get(
        machine, "%s-linux-gnu" % machine)
    system_dirs = ["/usr/lib/%s" % multiarch, "/usr/lib64", "/usr/lib", "/usr/local/nvidia/lib64", "/usr/lib/wsl/lib"]
    for name in ("libcuda.so", "libcuda.so.1"):
        hit = first("driver", _ldconfig_paths(ldconfig_text, [name]) + [os.path.join(d, name) for d in system_dirs])
        if hit:
            return hit
    stub_dirs = [os.path.join(home, "lib64", "stubs"), os.path.join(home, "lib", "stubs")] + [
        os.path.join(d, "stubs") for d in target_dirs] if home else []
    hit = first("stub", [os.path.join(d, "libcuda.so") for d in stub_dirs])
    if hit:
        return hit
    return {"path": None, "kind": None, "exists": False, "searched": searched}


# ----------------------------------------------------------------------------------------------
# identity of a build


def build_key(fields):
    """A short stable hash of the inputs that determine the library (same inputs, same key)."""
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def sha256_file(path, chunk=4 * 1024 * 1024):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_fingerprint(root, cmakelists_text=None):
    """Content hash of a source tree: relative paths and file contents, sorted.

    Skips FINGERPRINT_SKIP_DIRS. When cmakelists_text is given it stands for the top-level
    CMakeLists.txt, so that the fingerprint of a patched tree and of its unpatched original agree
    (pass the text after patching).
    """
    digest = hashlib.sha256()
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in FINGERPRINT_SKIP_DIRS)
        for name in filenames:
            full = os.path.join(dirpath, name)
            if os.path.isfile(full) and not os.path.islink(full):
                files.append(os.path.relpath(full, root))
    for rel in sorted(files):
        digest.update(rel.encode("utf-8") + b"\0")
        if rel == "CMakeLists.txt" and cmakelists_text is not None:
            digest.update(cmakelists_text.encode("utf-8"))
        else:
            digest.update(sha256_file(os.path.join(root, rel)).encode("ascii"))
        digest.update(b"\0")
    return digest.hexdigest()
