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
# CMakeLists.txt, read as CMake reads it


class CMakeArg:
    """One argument of a command: kind 'quoted', 'unquoted' or 'bracket'; value with escapes resolved;
    start/end offsets of its source text (quotes included)."""

    __slots__ = ("kind", "value", "start", "end")

    def __init__(self, kind, value, start, end):
        self.kind, self.value, self.start, self.end = kind, value, start, end

    def items(self):
        """The list elements CMake sees: an unquoted argument is split at ';' into several arguments, a
        quoted one stays one argument whose value is a ';'-list."""
        return [item for item in _split_semicolons(self.value) if item]


class CMakeCommand:
    """A command invocation: name (lower case), args, start/end offsets, line, and path: the
    (chain, branch) pairs of the if() blocks around it."""

    __slots__ = ("name", "args", "start", "end", "line", "path", "in_function")

    def __init__(self, name, args, start, end, line):
        self.name, self.args, self.start, self.end, self.line = name, args, start, end, line
        self.path, self.in_function = (), False

    def arg_values(self):
        """The arguments after CMake's list expansion of unquoted arguments."""
        values = []
        for arg in self.args:
            values.extend(arg.items() if arg.kind == "unquoted" else [arg.value])
        return values


_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACKET_OPEN_RE = re.compile(r"\[(=*)\[")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0"}
_VERSION_OPS = ("VERSION_LESS", "VERSION_GREATER", "VERSION_EQUAL", "VERSION_LESS_EQUAL", "VERSION_GREATER_EQUAL")
_CUDA_VERSION_VARS = ("CMAKE_CUDA_COMPILER_VERSION", "${CMAKE_CUDA_COMPILER_VERSION}", "CUDA_VERSION", "${CUDA_VERSION}")


def _split_semicolons(value):
    r"""'a;b\;c' -> ['a', 'b;c'] (an escaped ';' does not split)."""
    items, current, index = [], [], 0
    while index < len(value):
        char = value[index]
        if char == "\\" and index + 1 < len(value) and value[index + 1] == ";":
            current.append(";")
            index += 2
            continue
        if char == ";":
            items.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    items.append("".join(current))
    return items


def _line_of(text, offset):
    return text.count("\n", 0, offset) + 1


def _bracket_close(text, bracket, what):
    """bracket: the match of an opening [[ or [=[ ...; the offset of its closing ]] (same number of '=')."""
    end = text.find("]" + bracket.group(1) + "]", bracket.end())
    if end < 0:
        raise Fa2SourceError("CMakeLists.txt line %d: %s never closed" % (_line_of(text, bracket.start()), what))
    return end


def _skip_comment(text, index):
    """index at '#': the offset after the line comment or bracket comment #[[...]]."""
    bracket = _BRACKET_OPEN_RE.match(text, index + 1)
    if bracket:
        return _bracket_close(text, bracket, "bracket comment") + len(bracket.group(0))
    end = text.find("\n", index)
    return len(text) if end < 0 else end


def _read_escape(text, index, out):
    """index at a backslash: append what the escape stands for to out; return the next offset."""
    if index + 1 >= len(text):
        return index + 1
    char = text[index + 1]
    if char == "\n":                       # line continuation (quoted arguments only)
        return index + 2
    if char == "\r" and text[index + 2:index + 3] == "\n":
        return index + 3
    if char == ";":
        out.append("\\;")                  # kept: it matters for list splitting
    else:
        out.append(_ESCAPES.get(char, char))
    return index + 2


def _read_arguments(text, index):
    """index just after '(': (args, offset after the closing ')')."""
    args, depth = [], 0
    while True:
        if index >= len(text):
            raise Fa2SourceError("CMakeLists.txt: a command is not closed with ')' by the end of the file")
        char = text[index]
        if char in " \t\r\n":
            index += 1
        elif char == "#":
            index = _skip_comment(text, index)
        elif char == ")":
            if depth == 0:
                return args, index + 1
            depth -= 1
            args.append(CMakeArg("unquoted", ")", index, index + 1))
            index += 1
        elif char == "(":
            depth += 1
            args.append(CMakeArg("unquoted", "(", index, index + 1))
            index += 1
        elif char == '"':
            start, out, index = index, [], index + 1
            while True:
                if index >= len(text):
                    raise Fa2SourceError("CMakeLists.txt line %d: quoted argument never closed" % _line_of(text, start))
                char = text[index]
                if char == "\\":
                    index = _read_escape(text, index, out)
                elif char == '"':
                    index += 1
                    break
                else:
                    out.append(char)
                    index += 1
            args.append(CMakeArg("quoted", "".join(out), start, index))
        elif _BRACKET_OPEN_RE.match(text, index):
            bracket = _BRACKET_OPEN_RE.match(text, index)
            end = _bracket_close(text, bracket, "bracket argument")
            body = text[bracket.end():end]
            body = body[1:] if body.startswith("\n") else body
            index = end + len(bracket.group(0))
            args.append(CMakeArg("bracket", body, bracket.start(), index))
        else:
            start, out = index, []
            while index < len(text) and text[index] not in ' \t\r\n()#"':
                if text[index] == "\\":
                    index = _read_escape(text, index, out)
                else:
                    out.append(text[index])
                    index += 1
            args.append(CMakeArg("unquoted", "".join(out), start, index))


def read_cmake(text):
    """The command invocations of a CMake file, in order, each with the if() branches it sits in.

    Returns (commands, chains): chains[i] is the list of branches of the i-th if() block, each branch
    (command, condition args or None for else()). Commands inside function()/macro() bodies are marked
    in_function (they do not run where they are written).
    """
    commands, index = [], 0
    while index < len(text):
        char = text[index]
        if char in " \t\r\n":
            index += 1
            continue
        if char == "#":
            index = _skip_comment(text, index)
            continue
        ident = _IDENT_RE.match(text, index)
        if not ident:
            raise Fa2SourceError("CMakeLists.txt line %d: expected a command, found %r" % (
                _line_of(text, index), text[index:index + 20]))
        after = index + len(ident.group(0))
        while after < len(text) and text[after] in " \t":
            after += 1
        if after >= len(text) or text[after] != "(":
            raise Fa2SourceError("CMakeLists.txt line %d: %s is not followed by '('" % (
                _line_of(text, index), ident.group(0)))
        args, end = _read_arguments(text, after + 1)
        commands.append(CMakeCommand(ident.group(0).lower(), args, index, end, _line_of(text, index)))
        index = end

    chains, stack, function_depth = [], [], 0
    for command in commands:
        name = command.name
        command.in_function = function_depth > 0
        if name in ("function", "macro"):
            function_depth += 1
        elif name in ("endfunction", "endmacro"):
            function_depth = max(0, function_depth - 1)
        if name == "if":
            command.path = tuple(stack)
            chains.append([(command, command.args)])
            stack.append((len(chains) - 1, 0))
        elif name in ("elseif", "else"):
            if not stack:
                raise Fa2SourceError("CMakeLists.txt line %d: %s() without if()" % (command.line, name))
            chain, _branch = stack.pop()
            chains[chain].append((command, command.args if name == "elseif" else None))
            command.path = tuple(stack)
            stack.append((chain, len(chains[chain]) - 1))
        elif name == "endif":
            if not stack:
                raise Fa2SourceError("CMakeLists.txt line %d: endif() without if()" % command.line)
            stack.pop()
            command.path = tuple(stack)
        else:
            command.path = tuple(stack)
    if stack:
        raise Fa2SourceError("CMakeLists.txt: the if() of line %d is never closed with endif()" % chains[stack[-1][0]][0][0].line)
    return commands, chains


def _version_tuple(text):
    return tuple(int(part) for part in re.findall(r"\d+", str(text)))


def _compare_versions(left, right):
    length = max(len(left), len(right))
    left, right = left + (0,) * (length - len(left)), right + (0,) * (length - len(right))
    return (left > right) - (left < right)


def version_condition(args, cuda_version):
    """True/False for an if() condition that compares the CUDA compiler version with a literal
    ([NOT] ${CMAKE_CUDA_COMPILER_VERSION} VERSION_LESS 12.8, either operand order); None for any other."""
    values = [arg.value for arg in args]
    negate = False
    if values and values[0] == "NOT":
        negate, values = True, values[1:]
    if len(values) != 3 or values[1] not in _VERSION_OPS:
        return None
    left, op, right = values
    if left in _CUDA_VERSION_VARS and re.match(r"^\d+(\.\d+)*$", right):
        cmp = _compare_versions(_version_tuple(cuda_version), _version_tuple(right))
    elif right in _CUDA_VERSION_VARS and re.match(r"^\d+(\.\d+)*$", left):
        cmp = _compare_versions(_version_tuple(left), _version_tuple(cuda_version))
    else:
        return None
    result = {"VERSION_LESS": cmp < 0, "VERSION_GREATER": cmp > 0, "VERSION_EQUAL": cmp == 0,
              "VERSION_LESS_EQUAL": cmp <= 0, "VERSION_GREATER_EQUAL": cmp >= 0}[op]
    return not result if negate else result


def parse_cmakelists(text):
    """The commands the patch works on. Raises Fa2SourceError naming each one that is missing.

    Returns a dict: text, commands, chains; supported (the first ``set(CUDA_SUPPORTED_ARCHS ...)``),
    fa2_calls (every ``cuda_archs_loose_intersection(FA2_ARCHS ...)``, whatever its layout) and
    cuda_archs_call (the first ``cuda_archs_loose_intersection(CUDA_ARCHS ...)``, where the target list
    meets CUDA_SUPPORTED_ARCHS; None when there is none).
    """
    commands, chains = read_cmake(text)
    runnable = [c for c in commands if not c.in_function and c.name not in ("function", "macro")]
    supported = next((c for c in runnable if c.name == "set" and c.args and c.args[0].value == "CUDA_SUPPORTED_ARCHS"), None)
    intersections = [c for c in runnable if c.name == "cuda_archs_loose_intersection" and c.args]
    fa2_calls = [c for c in intersections if c.args[0].value == "FA2_ARCHS"]
    missing = []
    if supported is None:
        missing.append('set(CUDA_SUPPORTED_ARCHS "...")')
    if not fa2_calls:
        missing.append('cuda_archs_loose_intersection(FA2_ARCHS "..." "${CUDA_ARCHS}")')
    if missing:
        raise Fa2SourceError("expected line(s) not found in CMakeLists.txt: %s" % "; ".join(missing))
    cuda_archs_call = next((c for c in intersections if c.args[0].value == "CUDA_ARCHS" and c.start > supported.start), None)
    return {"text": text, "commands": runnable, "chains": chains, "supported": supported, "fa2_calls": fa2_calls,
            "cuda_archs_call": cuda_archs_call}


def _chosen_branches(parsed, cuda_version):
    """{chain: branch index CMake takes} for this nvcc version (-1: none). A condition that is not a
    CUDA version comparison (FA2_ENABLED, VLLM_GPU_LANG STREQUAL "CUDA", ...) is taken as true."""
    chosen = {}
    for number, branches in enumerate(parsed["chains"]):
        chosen[number] = -1
        for branch, (_command, condition) in enumerate(branches):
            verdict = True if condition is None else version_condition(condition, cuda_version)
            if verdict is None or verdict:
                chosen[number] = branch
                break
    return chosen


def _runs(command, chosen):
    return all(chosen.get(chain) == branch for chain, branch in command.path)


def _branch_note(parsed, command):
    """', in the branch if(...)' for the innermost CUDA-version if() block around command, or ''."""
    for chain, branch in reversed(command.path):
        branches = parsed["chains"][chain]
        if any(condition is not None and version_condition(condition, "0") is not None for _c, condition in branches):
            header = branches[branch][0]
            return ", in the branch %s" % " ".join(parsed["text"][header.start:header.end].split())
    return ""


def supported_state(parsed, cuda_version):
    """(archs, last): CUDA_SUPPORTED_ARCHS as CMake computes it for this nvcc version where the target
    list meets it, and the last set()/list(APPEND) of it that runs before that point (the one to edit)."""
    chosen = _chosen_branches(parsed, cuda_version)
    limit = parsed["cuda_archs_call"].start if parsed["cuda_archs_call"] else parsed["fa2_calls"][-1].start
    archs, last = [], None
    for command in parsed["commands"]:
        if command.start >= limit:
            break
        if not command.args or not _runs(command, chosen):
            continue
        values = command.arg_values()
        if command.name == "set" and values and values[0] == "CUDA_SUPPORTED_ARCHS":
            new = []
            for item in values[1:]:
                for element in _split_semicolons(item):
                    if element == "${CUDA_SUPPORTED_ARCHS}":
                        new.extend(archs)
                    elif "${" in element:
                        raise Fa2SourceError("CMakeLists.txt line %d: CUDA_SUPPORTED_ARCHS is set from a variable (%s); "
                                             "cannot tell its value" % (command.line, element))
                    elif element:
                        new.append(element)
            archs, last = new, command
        elif command.name == "list" and len(values) >= 2 and values[1] == "CUDA_SUPPORTED_ARCHS":
            items = [e for v in values[2:] for e in _split_semicolons(v) if e]
            if any("${" in item for item in items):
                raise Fa2SourceError("CMakeLists.txt line %d: list(%s CUDA_SUPPORTED_ARCHS ...) uses a variable; "
                                     "cannot tell its value" % (command.line, values[0]))
            if values[0] == "APPEND":
                archs, last = archs + items, command
            elif values[0] == "REMOVE_ITEM":
                archs = [arch for arch in archs if arch not in items]
            else:
                raise Fa2SourceError("CMakeLists.txt line %d: list(%s CUDA_SUPPORTED_ARCHS ...) is not modelled" % (
                    command.line, values[0]))
    return archs, last


def supported_archs(parsed, cuda_version):
    """CUDA_SUPPORTED_ARCHS as CMake would compute it with this nvcc version."""
    return supported_state(parsed, cuda_version)[0]


def fa2_call(parsed, cuda_version):
    """(command, src arg, src list) of the cuda_archs_loose_intersection(FA2_ARCHS SRC TGT) that runs for
    this nvcc version (the last one, when several do: it sets FA2_ARCHS last)."""
    chosen = _chosen_branches(parsed, cuda_version)
    running = [c for c in parsed["fa2_calls"] if _runs(c, chosen)]
    if not running:
        raise Fa2SourceError("no cuda_archs_loose_intersection(FA2_ARCHS ...) in CMakeLists.txt runs for CUDA %s "
                             "(lines %s are in branches not taken)" % (
                                 cuda_version, ", ".join(str(c.line) for c in parsed["fa2_calls"])))
    command = running[-1]
    values = command.arg_values()
    if len(values) != 3:
        raise Fa2SourceError("CMakeLists.txt line %d: cuda_archs_loose_intersection(FA2_ARCHS ...) has %d arguments "
                             "after CMake's list expansion, expected 3 (FA2_ARCHS, the FA2 list, the targets): %s" % (
                                 command.line, len(values), values))
    src = command.args[1]
    if "${" in src.value:
        raise Fa2SourceError("CMakeLists.txt line %d: the FA2 arch list is a variable (%s); cannot tell or patch its "
                             "value" % (_line_of(parsed["text"], src.start), src.value))
    return command, src, [item for item in _split_semicolons(src.value) if item]


def simulate(text, target_archs, cuda_version):
    """What configure would print: {'cuda_archs': [...], 'fa2_archs': [...]} for these targets."""
    parsed = text if isinstance(text, dict) else parse_cmakelists(text)
    targets = normalize_archs(target_archs)
    cuda_archs = loose_intersection(supported_archs(parsed, cuda_version), targets)
    return {"cuda_archs": cuda_archs, "fa2_archs": loose_intersection(fa2_call(parsed, cuda_version)[2], cuda_archs)}


def _quote_args(archs):
    return " ".join('"%s"' % arch for arch in archs)


def patch_cmakelists(text, target_archs, cuda_version, ptx=False):
    """Make FA2 compile natively for target_archs. Returns (new_text, info).

    info: desired (the FA2 list wanted), before / after (FA2_ARCHS that configure would print before
    and after), changes (one line per edit), status 'unchanged' (the source already gives the desired
    list, e.g. upstream PR #196 or a second run) or 'patched'.

    The file is read as CMake reads it (arguments across lines, comments, quoting, if()/elseif()/else()
    branches chosen for this nvcc version). Edits, only where needed, each inside what CMake runs for this
    nvcc version: the target archs missing from CUDA_SUPPORTED_ARCHS are added as arguments to the last
    set()/list(APPEND) of it that runs before the target list meets it; the FA2 list argument of the
    cuda_archs_loose_intersection(FA2_ARCHS ...) that runs gets the desired list. Branches CMake does not
    take, the layout and the comments are left as they are.
    """
    targets = normalize_archs(target_archs)
    desired = desired_fa2_list(targets, ptx)
    parsed = parse_cmakelists(text)
    before = simulate(parsed, targets, cuda_version)["fa2_archs"]
    info = {"desired": desired, "before": before, "after": before, "changes": [], "status": "unchanged"}
    if before == desired:
        return text, info

    edits = []
    have, last = supported_state(parsed, cuda_version)
    missing = [arch for arch in targets if arch not in have]
    if missing:
        if last is None:
            raise Fa2SourceError("CMakeLists.txt: no set()/list(APPEND) of CUDA_SUPPORTED_ARCHS runs for CUDA %s" % cuda_version)
        edits.append((last.args[-1].end, last.args[-1].end, " " + _quote_args(missing)))
        what = "set(CUDA_SUPPORTED_ARCHS)" if last.name == "set" else "list(APPEND CUDA_SUPPORTED_ARCHS)"
        info["changes"].append("CUDA_SUPPORTED_ARCHS: added %s (line %d, %s%s)" % (
            ", ".join(missing), _line_of(text, last.args[-1].start), what, _branch_note(parsed, last)))

    _command, src, current = fa2_call(parsed, cuda_version)
    if current != desired:
        edits.append((src.start, src.end, '"%s"' % ";".join(desired)))
        info["changes"].append('FA2_ARCHS source list: "%s" -> "%s" (line %d)' % (
            ";".join(current), ";".join(desired), _line_of(text, src.start)))

    new_text = text
    for start, end, replacement in sorted(edits, reverse=True):
        new_text = new_text[:start] + replacement + new_text[end:]
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
        "is_final": re.match(r"^\d+\.\d+(\.\d+)?$", text.split("+", maxsplit=1)[0]) is not None,
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
