# -*- coding: utf-8 -*-
# Copyright: dgxspark.vllm contributors
# Apache License 2.0 (see LICENSE)
"""Read the CUDA code embedded in an ELF file (shared object, executable, object file).

nvcc embeds device code in the host ELF as one or more *fatbin containers*, in the section
``.nv_fatbin`` (linked code) or ``__nv_relfatbin`` (relocatable device code, ``-rdc``).
Each container holds entries: SASS (an ELF "cubin" for one SM), PTX (text for one virtual
arch, JIT-compiled by the driver) and, with ``-dlto``, NVVM IR.

The layout below was worked out by compiling objects with nvcc 13.0, reading their bytes and
comparing them with what ``cuobjdump`` prints (all integers little-endian):

container header, 16 bytes::

    u32 magic 0xBA55ED50 | u16 version (1) | u16 header size (16) | u64 size of the entries

entry header, 64 bytes or more (the size is in the header; sm_100+ entries carry an extension)::

    0  u16 kind (1 PTX, 2 ELF cubin, 8 NVVM IR)      2  u16 entry version (0x0101)
    4  u32 header size                               8  u64 payload size (padded to 8 bytes)
    16 u32 compressed size (0: not compressed)      20 u32 offset of the extension (or 0)
    24 u16 minor, u16 major (PTX ISA / cubin ABI)   28 u32 SM number (80, 90, 121, ...)
    32 u32 name offset, u32 name size (unused)      40 u64 flags
    48 u64 (unused here)                             56 u64 uncompressed size

flags: 0x1 64-bit host, 0x10 Linux host, 0x2000 LZ4-compressed payload, 0x8000
Zstandard-compressed payload, 0x100000 arch-specific target (sm_90a), 0x200000
family-specific target (sm_120f).

Plain functions with no Ansible imports, shared by the module, its tests and tests/gpu.
"""

from __future__ import annotations

import mmap
import os
import re
import struct

FATBIN_MAGIC = 0xBA55ED50
# The section cuobjdump reads by default, and the one it falls back to.
EXECUTABLE_SECTION = ".nv_fatbin"
RELOCATABLE_SECTION = "__nv_relfatbin"

KIND_PTX = 1
KIND_ELF = 2
KIND_NVVM = 8
KIND_NAMES = {KIND_PTX: "ptx", KIND_ELF: "sass", KIND_NVVM: "nvvm"}

FLAG_LZ4 = 0x2000
FLAG_ZSTD = 0x8000
FLAG_ARCH_SPECIFIC = 0x100000
FLAG_FAMILY_SPECIFIC = 0x200000

EM_NAMES = {62: "x86_64", 183: "aarch64", 190: "cuda"}
EM_CUDA = 190

_CONTAINER = struct.Struct("<IHHQ")
_ENTRY = struct.Struct("<HHIQIIHHIIIQQQ")
_ELF_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
_SECTION = struct.Struct("<IIQQQQIIQQ")
_SYMBOL = struct.Struct("<IBBHQQ")

STT_FUNC = 2
SHT_SYMTAB = 2
SHT_NOBITS = 8
STO_CUDA_ENTRY = 0x10

_PTX_ENTRY_RE = re.compile(rb"^[ \t]*(?:\.(?:visible|weak|extern)[ \t]+)*\.entry[ \t]+([A-Za-z_$%][\w$%.]*)", re.M)
_TARGET_RE = re.compile(r"^(?:(?:sm|compute)_)?(\d+)\.?(\d+)?([af]?)(\+ptx)?$", re.I)


class FatbinError(ValueError):
    """Raised when a file cannot be read as an ELF file with CUDA code."""


# --------------------------------------------------------------------------- ELF


def _elf_sections(buf, where):
    """Return (e_machine, [{name, type, offset, size, link}]) of the 64-bit little-endian ELF in ``buf``."""
    if len(buf) < 4 or bytes(buf[:4]) != b"\x7fELF":
        raise FatbinError("%s is not an ELF file (it starts with %r)" % (where, bytes(buf[:8])))
    if len(buf) < _ELF_HEADER.size:
        raise FatbinError("%s is a truncated ELF file (%d bytes)" % (where, len(buf)))
    ident, _type, machine, _v, _e, _ph, shoff, _f, _eh, _phs, _phn, shentsize, shnum, shstrndx = \
        _ELF_HEADER.unpack_from(buf, 0)
    if ident[4] != 2:
        raise FatbinError("%s is a 32-bit ELF file; only 64-bit ELF files carry CUDA fatbins" % where)
    if ident[5] != 1:
        raise FatbinError("%s is a big-endian ELF file; only little-endian is supported" % where)
    if shoff == 0:
        raise FatbinError("%s has no ELF section headers, so its fatbin cannot be located" % where)
    if shentsize < _SECTION.size:
        raise FatbinError("%s has ELF section headers of %d bytes (expected %d)" % (where, shentsize, _SECTION.size))
    if shnum == 0 or shstrndx == 0xFFFF:
        # Extended numbering: the real values live in section header 0.
        if shoff + _SECTION.size > len(buf):
            raise FatbinError("%s: the ELF section header table lies past the end of the file" % where)
        first = _SECTION.unpack_from(buf, shoff)
        shnum = shnum or first[5]
        if shstrndx == 0xFFFF:
            shstrndx = first[6]
    if shoff + shnum * shentsize > len(buf):
        raise FatbinError("%s: the ELF section header table lies past the end of the file (truncated?)" % where)
    raw = [_SECTION.unpack_from(buf, shoff + i * shentsize) for i in range(shnum)]
    if shstrndx >= shnum:
        raise FatbinError("%s: the ELF section-name table index %d is out of range" % (where, shstrndx))
    str_off, str_size = raw[shstrndx][4], raw[shstrndx][5]
    sections = []
    for name_off, sh_type, _flags, _addr, offset, size, link, _info, _align, _entsize in raw:
        start = str_off + name_off
        end = buf.find(b"\0", start, str_off + str_size) if start < len(buf) else -1
        name = bytes(buf[start:end]).decode("ascii", "replace") if end >= 0 else ""
        if sh_type != SHT_NOBITS and offset + size > len(buf):
            raise FatbinError("%s: ELF section %s lies past the end of the file (truncated?)" % (where, name or "?"))
        sections.append({"name": name, "type": sh_type, "offset": offset, "size": size, "link": link})
    return machine, sections


def elf_machine_name(machine):
    return EM_NAMES.get(machine, "machine %d" % machine)


# --------------------------------------------------------------------------- decompression


def lz4_block_decompress(src, size):
    """Decompress one raw LZ4 block (no frame) into ``size`` bytes; ValueError on bad data."""
    out = bytearray()
    pos, end = 0, len(src)
    while pos < end:
        token = src[pos]
        pos += 1
        length = token >> 4
        if length == 15:
            while True:
                if pos >= end:
                    raise ValueError("LZ4 data ends inside a literal length")
                extra = src[pos]
                pos += 1
                length += extra
                if extra != 255:
                    break
        if pos + length > end:
            raise ValueError("LZ4 literals run past the end of the data")
        out += src[pos:pos + length]
        pos += length
        if pos >= end:
            break  # the last sequence has literals only
        if pos + 2 > end:
            raise ValueError("LZ4 data ends inside a match offset")
        offset = src[pos] | (src[pos + 1] << 8)
        pos += 2
        if offset == 0 or offset > len(out):
            raise ValueError("LZ4 match offset %d points before the start of the output" % offset)
        length = token & 15
        if length == 15:
            while True:
                if pos >= end:
                    raise ValueError("LZ4 data ends inside a match length")
                extra = src[pos]
                pos += 1
                length += extra
                if extra != 255:
                    break
        length += 4
        start = len(out) - offset
        if offset >= length:
            out += out[start:start + length]
        else:  # overlapping copy: repeat the last `offset` bytes
            chunk = bytes(out[start:])
            out += (chunk * (length // offset + 1))[:length]
        if len(out) > size:
            raise ValueError("LZ4 data expands past the stated size %d" % size)
    if len(out) != size:
        raise ValueError("LZ4 data expands to %d bytes, not the stated %d" % (len(out), size))
    return bytes(out)


def _zstd_decompressor():
    """Return (function(data, size) -> bytes, provider name) or (None, None)."""
    for name in ("compression.zstd", "backports.zstd"):  # Python 3.14+, and its backport
        try:
            module = __import__(name, fromlist=["decompress"])
        except ImportError:
            continue
        return (lambda data, size, _m=module: _m.decompress(data)), name
    try:
        import zstandard
    except ImportError:
        return None, None

    def _decompress(data, size):
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=max(size, 1))

    return _decompress, "zstandard"


def zstd_provider():
    """Name of the Zstandard implementation available to this Python, or None."""
    return _zstd_decompressor()[1]


# --------------------------------------------------------------------------- kernel names


def cubin_kernels(cubin):
    """Kernel (entry function) names defined in a cubin, in symbol-table order."""
    _machine, sections = _elf_sections(cubin, "embedded cubin")
    names = []
    for sec in sections:
        if sec["type"] != SHT_SYMTAB or sec["link"] >= len(sections):
            continue
        strtab = sections[sec["link"]]
        for off in range(sec["offset"], sec["offset"] + sec["size"] - _SYMBOL.size + 1, _SYMBOL.size):
            st_name, st_info, st_other, st_shndx, _value, _size = _SYMBOL.unpack_from(cubin, off)
            if (st_info & 0xF) != STT_FUNC or not st_other & STO_CUDA_ENTRY or st_shndx == 0:
                continue
            start = strtab["offset"] + st_name
            end = cubin.find(b"\0", start, strtab["offset"] + strtab["size"])
            if end > start:
                names.append(bytes(cubin[start:end]).decode("ascii", "replace"))
    return names


def ptx_kernels(ptx):
    """Kernel (``.entry``) names declared in PTX text (bytes), in order."""
    return [m.group(1).decode("ascii", "replace") for m in _PTX_ENTRY_RE.finditer(ptx)]


# --------------------------------------------------------------------------- fatbin walking


def arch_name(sm, flags, kind):
    """``sm_121``, ``sm_90a``; PTX keeps a family ``f`` (sm_120f), SASS drops it as cuobjdump does."""
    suffix = ""
    if flags & FLAG_ARCH_SPECIFIC:
        suffix = "a"
    elif flags & FLAG_FAMILY_SPECIFIC and kind == KIND_PTX:
        suffix = "f"
    return "sm_%d%s" % (sm, suffix)


def walk_fatbin(buf, start, size, where):
    """Yield a dict per entry of the fatbin containers in ``buf[start:start+size]``."""
    pos, end, container = start, start + size, 0
    while pos < end:
        if end - pos < _CONTAINER.size:
            if any(bytes(buf[pos:end])):
                raise FatbinError("%s: %d stray bytes after the last fatbin container" % (where, end - pos))
            return
        magic, _version, header_size, fat_size = _CONTAINER.unpack_from(buf, pos)
        if magic != FATBIN_MAGIC:
            if not any(bytes(buf[pos:pos + 8])):
                pos += 8  # zero padding between containers
                continue
            raise FatbinError(
                "%s: no fatbin container at offset %d of the section (found 0x%08x, expected magic 0x%08x)"
                % (where, pos - start, magic, FATBIN_MAGIC))
        if header_size < _CONTAINER.size or pos + header_size + fat_size > end:
            raise FatbinError(
                "%s: fatbin container %d at offset %d claims %d bytes but the section has %d left (corrupt or truncated)"
                % (where, container, pos - start, header_size + fat_size, end - pos))
        entry_pos, entry_end = pos + header_size, pos + header_size + fat_size
        while entry_pos < entry_end:
            if entry_end - entry_pos < _ENTRY.size:
                raise FatbinError("%s: fatbin container %d ends inside an entry header" % (where, container))
            (kind, _ev, entry_header, payload_size, compressed_size, _ext, minor, major, sm, _no, _nl, flags,
             _r, uncompressed_size) = _ENTRY.unpack_from(buf, entry_pos)
            if entry_header < _ENTRY.size or entry_pos + entry_header + payload_size > entry_end:
                raise FatbinError(
                    "%s: fatbin entry at offset %d has a bad size (header %d, payload %d; %d bytes left)"
                    % (where, entry_pos - start, entry_header, payload_size, entry_end - entry_pos))
            data_start = entry_pos + entry_header
            compression = "zstd" if flags & FLAG_ZSTD else "lz4" if flags & FLAG_LZ4 else None
            yield {
                "container": container,
                "kind_code": kind,
                "kind": KIND_NAMES.get(kind, "kind %d" % kind),
                "sm": sm,
                "arch": arch_name(sm, flags, kind),
                "version": "%d.%d" % (major, minor),
                "flags": flags,
                "compression": compression,
                "stored_size": compressed_size if compression else payload_size,
                "size": uncompressed_size if compression else payload_size,
                "data_start": data_start,
                "data_size": compressed_size if compression and compressed_size else payload_size,
            }
            entry_pos = data_start + payload_size
        pos = entry_end
        container += 1


def _payload(buf, entry, zstd):
    """The uncompressed payload of an entry, or (None, reason)."""
    data = bytes(buf[entry["data_start"]:entry["data_start"] + entry["data_size"]])
    if entry["compression"] is None:
        return data, None
    try:
        if entry["compression"] == "lz4":
            return lz4_block_decompress(data, entry["size"]), None
        if zstd is None:
            return None, "zstd-compressed, and this Python has no Zstandard module (compression.zstd, backports.zstd or zstandard)"
        return zstd(data, entry["size"]), None
    except Exception as exc:  # any codec failure is reported per entry, not fatal
        return None, "%s payload could not be decompressed: %s" % (entry["compression"], exc)


def _stem(path):
    """cuobjdump names an entry <file name without its last extension>.<n>.<arch>.cubin|ptx."""
    return os.path.splitext(os.path.basename(path))[0]


def read_fatbin(path, kernels=True):
    """Read the CUDA code of the ELF file at ``path`` without any NVIDIA tool.

    Returns the info dict described in :func:`summarize` with ``method: python``.
    Raises FatbinError naming the path when the file is not an ELF file or holds no fatbin.
    """
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise FatbinError("cannot open %s: %s" % (path, exc.strerror or exc))
    with handle:
        try:
            buf = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # empty file
            raise FatbinError("%s is not an ELF file (it is empty)" % path)
        except OSError as exc:
            raise FatbinError("cannot map %s: %s" % (path, exc.strerror or exc))
        try:
            return _read(buf, path, kernels)
        finally:
            buf.close()


def _locate(buf, path):
    """(section dict, ELF machine name, notes) of the fatbin to read in ``buf``."""
    if len(buf) >= 4 and struct.unpack_from("<I", buf, 0)[0] == FATBIN_MAGIC:
        # A bare fatbin file (nvcc -fatbin): the whole file is the container list.
        return {"name": "(whole file)", "type": 1, "offset": 0, "size": len(buf)}, None, []
    machine, sections = _elf_sections(buf, path)
    if machine == EM_CUDA:
        raise FatbinError("%s is a bare cubin (an ELF file for the GPU), not a host file with a fatbin" % path)
    by_name = {s["name"]: s for s in sections}
    section = by_name.get(EXECUTABLE_SECTION) or by_name.get(RELOCATABLE_SECTION)
    if section is None:
        raise FatbinError("%s (ELF %s) has no %s or %s section: it holds no CUDA device code"
                          % (path, elf_machine_name(machine), EXECUTABLE_SECTION, RELOCATABLE_SECTION))
    if section["type"] == SHT_NOBITS:
        raise FatbinError("%s: section %s has no data in the file" % (path, section["name"]))
    notes = []
    if section["name"] == RELOCATABLE_SECTION:
        notes.append("read %s (relocatable device code): the file has no %s section"
                     % (RELOCATABLE_SECTION, EXECUTABLE_SECTION))
    return section, elf_machine_name(machine), notes


def _read(buf, path, kernels):
    section, machine, notes = _locate(buf, path)

    zstd, _provider = _zstd_decompressor() if kernels else (None, None)
    stem = _stem(path)
    counters = {}
    entries, unreadable, skipped = [], {}, {}
    for raw in walk_fatbin(buf, section["offset"], section["size"], "%s section %s" % (path, section["name"])):
        if raw["kind"] not in ("sass", "ptx"):
            skipped[raw["kind"]] = skipped.get(raw["kind"], 0) + 1
            continue
        counters[raw["kind"]] = counters.get(raw["kind"], 0) + 1
        entry = {
            "kind": raw["kind"],
            "arch": raw["arch"],
            "name": "%s.%d.%s.%s" % (stem, counters[raw["kind"]], raw["arch"], "cubin" if raw["kind"] == "sass" else "ptx"),
            "container": raw["container"],
            "compression": raw["compression"],
            "size": raw["size"],
            "stored_size": raw["stored_size"],
            "kernels": None,
        }
        if kernels:
            payload, reason = _payload(buf, raw, zstd)
            if payload is None:
                unreadable[reason] = unreadable.get(reason, 0) + 1
            else:
                try:
                    entry["kernels"] = cubin_kernels(payload) if raw["kind"] == "sass" else ptx_kernels(payload)
                except FatbinError as exc:
                    unreadable[str(exc)] = unreadable.get(str(exc), 0) + 1
        entries.append(entry)
    for kind, count in sorted(skipped.items()):
        what = "NVVM (link-time IR)" if kind == "nvvm" else "unknown (%s)" % kind
        notes.append("%d %s entr%s not listed: neither SASS nor PTX" % (count, what, "y" if count == 1 else "ies"))
    for reason, count in sorted(unreadable.items()):
        notes.append("kernel names of %d entr%s not read: %s" % (count, "y" if count == 1 else "ies", reason))
    info = summarize(entries, method="python", kernels_read=kernels, notes=notes)
    info["section"] = section["name"]
    info["elf_machine"] = machine
    return info


# --------------------------------------------------------------------------- cuobjdump


CUOBJDUMP_LIST_ARGS = ("--list-elf", "--list-ptx")
CUOBJDUMP_DUMP_ARGS = ("--dump-elf-symbols", "--dump-ptx")
_LIST_RE = re.compile(r"^(ELF|PTX) file\s+(\d+):\s+(\S+)\s*$")
_NAME_ARCH_RE = re.compile(r"\.(sm_\d+[af]?)\.(?:cubin|ptx)$")
# Symbol listing columns: type (STT_FUNC or FUNC, STT_? for an unnamed type) and binding (STB_GLOBAL or GLOBAL).
_SYM_TYPE_RE = re.compile(r"^(?:STT_)?(?:[A-Z][A-Z0-9_]*|\?)$")
_SYM_BIND_RE = re.compile(r"^(?:STB_)?[A-Z][A-Z0-9_]*$")
_SYM_PREFIX_RE = re.compile(r"^ST[TBVO]_")


def parse_cuobjdump_list(text):
    """Entries from ``cuobjdump --list-elf --list-ptx`` output, in file order."""
    entries = []
    for line in text.splitlines():
        match = _LIST_RE.match(line.strip())
        if not match:
            continue
        name = match.group(3)
        arch = _NAME_ARCH_RE.search(name)
        if not arch:
            raise FatbinError("cannot read the arch from the cuobjdump line %r" % line.strip())
        entries.append({"kind": "sass" if match.group(1) == "ELF" else "ptx", "arch": arch.group(1), "name": name,
                        "kernels": None})
    return entries


def parse_symbol_line(text):
    """(type, flags, name) of one line of cuobjdump's symbol listing, or None if the line is not in a known form.

    cuobjdump up to 13.4 prints ELF constant names, ``STT_FUNC  STB_GLOBAL STO_ENTRY  name``; 13.5 prints
    columns without the prefixes, ``FUNC  GLOBAL  DEFAULT  ENTRY  name``. Both put ``U`` before the name of an
    undefined symbol. The prefixes are dropped, so both forms give the same flags.
    """
    fields = text.split()
    if len(fields) < 3 or not _SYM_TYPE_RE.match(fields[0]) or not _SYM_BIND_RE.match(fields[1]):
        return None
    flags = set(_SYM_PREFIX_RE.sub("", field) for field in fields[1:-1])
    return _SYM_PREFIX_RE.sub("", fields[0]), flags, fields[-1]


def parse_cuobjdump_dump(lines):
    """Kernel names per entry from ``cuobjdump --dump-elf-symbols --dump-ptx`` output (an iterable of lines).

    Returns [{kind, arch, kernels}] in file order. Only the lines that matter are kept, so a
    PTX dump of hundreds of megabytes can be streamed through it. A kernel is a defined FUNC symbol
    marked ENTRY, the same test cubin_kernels() makes on the symbol table itself. Raises FatbinError
    on a symbol line in neither known form, so that a new cuobjdump format is not read as "no kernels".
    """
    blocks, current, pending, in_symbols = [], None, None, False
    for line in lines:
        text = line.strip()
        if text.startswith("Fatbin elf code"):
            pending, in_symbols = "sass", False
        elif text.startswith("Fatbin ptx code"):
            pending, in_symbols = "ptx", False
        elif pending and text.startswith("arch ="):
            current = {"kind": pending, "arch": text.split("=", 1)[1].strip(), "kernels": []}
            blocks.append(current)
            pending = None
        elif current is None:
            continue
        elif current["kind"] == "sass":
            if text == "symbols:":
                in_symbols = True
            elif not text:
                in_symbols = False
            elif in_symbols:
                symbol = parse_symbol_line(text)
                if symbol is None:
                    raise FatbinError("cuobjdump symbol line in an unknown form (entry %d, %s): %r"
                                      % (len(blocks), current["arch"], text[:200]))
                kind, flags, name = symbol
                if kind == "FUNC" and "ENTRY" in flags and "U" not in flags:
                    current["kernels"].append(name)
        elif ".entry" in text:
            current["kernels"].extend(ptx_kernels(text.encode("ascii", "replace")))
    return blocks


def cuobjdump_kernel_blocks(cuobjdump, path, env=None):
    """Run ``cuobjdump --dump-elf-symbols --dump-ptx PATH`` and parse it while it streams.

    The PTX of a large library can be hundreds of megabytes; only the lines that matter are kept.
    Returns (blocks, error): error is None, or cuobjdump's message and exit status.
    """
    import subprocess
    import tempfile

    argv = [cuobjdump] + list(CUOBJDUMP_DUMP_ARGS) + [path]
    run_env = dict(os.environ if env is None else env, LC_ALL="C")
    with tempfile.TemporaryFile() as errfile:  # a file, so a chatty stderr cannot block the pipe
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errfile, env=run_env,
                                    universal_newlines=True, errors="replace")
        except OSError as exc:
            return [], "cannot run %s: %s" % (cuobjdump, exc.strerror or exc)
        with proc.stdout:
            try:
                blocks = parse_cuobjdump_dump(proc.stdout)
            except FatbinError as exc:
                proc.kill()
                proc.wait()
                return [], "its output could not be read: %s" % exc
        rc = proc.wait()
        errfile.seek(0)
        err = errfile.read().decode("utf-8", "replace").strip()
    if rc != 0:
        return blocks, "%s (rc=%d)" % (err or "no message", rc)
    return blocks, None


def merge_cuobjdump(entries, blocks):
    """Attach kernel names from the dump blocks to the list entries; returns notes."""
    if len(blocks) != len(entries):
        return ["cuobjdump's dump has %d code blocks but its list has %d entries: kernel names not attached"
                % (len(blocks), len(entries))]
    notes = []
    for entry, block in zip(entries, blocks):
        if entry["kind"] != block["kind"] or entry["arch"].rstrip("f") != block["arch"].rstrip("f"):
            return ["cuobjdump's dump and list disagree at %s (%s %s): kernel names not attached"
                    % (entry["name"], block["kind"], block["arch"])]
        entry["kernels"] = block["kernels"]
    return notes


# --------------------------------------------------------------------------- summaries


def summarize(entries, method, kernels_read=True, notes=None):
    """Build the info dict that the module returns.

    Keys: method, entries [{kind, arch, name, kernels, ...}], sass_archs, ptx_archs (sorted),
    counts {sass, ptx}, kernels [{name, sass: [...], ptx: [...]}] (sorted by name),
    kernels_complete (every entry's kernel names were read), notes.
    """
    table = {}
    complete = bool(kernels_read)
    for entry in entries:
        if entry.get("kernels") is None:
            complete = False
            continue
        for kernel in entry["kernels"]:
            row = table.setdefault(kernel, {"name": kernel, "sass": [], "ptx": []})
            if entry["arch"] not in row[entry["kind"]]:
                row[entry["kind"]].append(entry["arch"])
    for row in table.values():
        row["sass"].sort()
        row["ptx"].sort()
    return {
        "method": method,
        "entries": entries,
        "sass_archs": sorted({e["arch"] for e in entries if e["kind"] == "sass"}),
        "ptx_archs": sorted({e["arch"] for e in entries if e["kind"] == "ptx"}),
        "counts": {"sass": sum(1 for e in entries if e["kind"] == "sass"),
                   "ptx": sum(1 for e in entries if e["kind"] == "ptx")},
        "kernels": [table[name] for name in sorted(table)],
        "kernels_complete": complete and bool(entries),
        "notes": list(notes or []),
    }


# --------------------------------------------------------------------------- targets


def _split_arch(arch):
    """'sm_121a' -> (121, 'a')."""
    match = re.match(r"^(?:sm|compute)_(\d+)([af]?)$", arch)
    if not match:
        raise ValueError("%r is not an SM arch name like sm_121" % (arch,))
    return int(match.group(1)), match.group(2)


def parse_target(target):
    """Parse one target arch: "12.1", "12.1a", "8.0+PTX", "sm_121", "compute_90a", "121" or 12.1.

    Returns {"sm": 121, "suffix": "a" or "", "ptx": bool (a +PTX suffix), "text": original}.
    Raises ValueError naming the value.
    """
    text = str(target).strip()
    match = _TARGET_RE.match(text)
    if not match:
        raise ValueError("target arch %r is not of the form 12.1, 12.1a, 8.0+PTX or sm_121" % (target,))
    major, minor = match.group(1), match.group(2)
    if minor is None:
        # a bare SM number (121, sm_90); "12" or "8" alone is ambiguous and refused
        if "." in text or not 30 <= int(major) <= 999:
            raise ValueError("target arch %r is not of the form 12.1, 12.1a, 8.0+PTX or sm_121" % (target,))
        sm = int(major)
    else:
        if len(minor) != 1:
            raise ValueError("target arch %r has a two-digit minor version" % (target,))
        sm = int(major) * 10 + int(minor)
    return {"sm": sm, "suffix": match.group(3).lower(), "ptx": bool(match.group(4)), "text": text}


def parse_targets(target_archs):
    """A list, or a string separated by ';', ',' or spaces (TORCH_CUDA_ARCH_LIST style)."""
    if target_archs is None:
        return []
    if isinstance(target_archs, (str, bytes)):
        items = [t for t in re.split(r"[;,\s]+", str(target_archs)) if t]
    else:
        items = list(target_archs)
    return [parse_target(t) for t in items]


def sass_for(info, sm):
    """SASS archs in ``info`` that are built for exactly SM ``sm`` (any a/f variant)."""
    return [a for a in info.get("sass_archs", []) if _split_arch(a)[0] == sm]


def check_targets(info, target_archs, allow_ptx=False):
    """Problems (strings) with a library's code for ``target_archs``; empty when all is well.

    - a target with no SASS for its SM (12.1 and 12.1a are both met by sm_121 or sm_121a);
    - PTX present when ``allow_ptx`` is false (a target written 8.0+PTX allows PTX for that SM);
    - when kernel names were read: kernels that lack SASS for a target whose SM is present.
    """
    targets = parse_targets(target_archs)
    problems = []
    if not info.get("entries"):
        problems.append("no CUDA code found (no SASS and no PTX)")
        return problems
    sass_list = ", ".join(info.get("sass_archs") or []) or "none"
    for target in targets:
        if not sass_for(info, target["sm"]):
            problems.append("no SASS for sm_%d (target %s); SASS present: %s"
                            % (target["sm"], target["text"], sass_list))
    ptx_ok = {t["sm"] for t in targets if t["ptx"]}
    extra_ptx = [a for a in info.get("ptx_archs", []) if not allow_ptx and _split_arch(a)[0] not in ptx_ok]
    if extra_ptx:
        problems.append("PTX present (%s) but PTX was not asked for: the driver would JIT-compile it"
                        % ", ".join(extra_ptx))
    if info.get("kernels_complete"):
        for target in targets:
            archs = set(sass_for(info, target["sm"]))
            if not archs:
                continue
            missing = [k["name"] for k in info.get("kernels", []) if not archs.intersection(k["sass"])]
            if missing:
                shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
                problems.append("%d of %d kernels have no SASS for sm_%d: %s"
                                % (len(missing), len(info["kernels"]), target["sm"], shown))
    return problems


def _ptx_runs_on(arch, sms):
    """Whether the driver can JIT PTX ``arch`` for one of the SMs ``sms``."""
    sm, suffix = _split_arch(arch)
    if suffix == "a":
        return sm in sms
    if suffix == "f":
        return any(sm // 10 == s // 10 and sm <= s for s in sms)
    return any(sm <= s for s in sms)


def _compute(arch):
    return "compute_" + arch[len("sm_"):]


def describe(info, target_archs=None):
    """One line for humans: how a library serves the targets (default: the SM12x family).

    Examples: "native sm_121", "PTX-only for SM12x (sm_80 SASS + compute_80 PTX; the driver JIT-compiles)".
    """
    sass = info.get("sass_archs") or []
    ptx = info.get("ptx_archs") or []
    if not sass and not ptx:
        return "no CUDA code"
    code = " + ".join(
        ([", ".join(sass) + " SASS"] if sass else []) + ([", ".join(_compute(a) for a in ptx) + " PTX"] if ptx else []))
    targets = parse_targets(target_archs)
    if targets:
        groups = [("sm_%d" % t["sm"], [t["sm"]]) for t in targets]
    else:
        groups = [("SM12x", [120, 121])]
    parts = []
    for label, sms in groups:
        native = [a for a in sass if _split_arch(a)[0] in sms]
        if native:
            others = [a for a in sass if a not in native]
            extra = ([", ".join(others) + " SASS"] if others else []) + \
                ([", ".join(_compute(a) for a in ptx) + " PTX"] if ptx else [])
            lacking = [k for k in info.get("kernels") or [] if not set(native).intersection(k["sass"])]
            if info.get("kernels_complete") and lacking:
                extra.insert(0, "%d of %d kernels lack it" % (len(lacking), len(info["kernels"])))
                parts.append("partly native " + ", ".join(native) + " (" + "; ".join(extra) + ")")
                continue
            parts.append("native " + ", ".join(native) + (" (also " + " + ".join(extra) + ")" if extra else ""))
            continue
        same_major = [a for a in sass if _split_arch(a)[0] // 10 == max(sms) // 10
                      and _split_arch(a)[0] < max(sms) and not _split_arch(a)[1]]
        jit = [a for a in ptx if _ptx_runs_on(a, sms)]
        if same_major:
            parts.append("no native code for %s, but %s SASS runs there by minor-version compatibility (%s)"
                         % (label, ", ".join(same_major), code))
        elif jit:
            parts.append("PTX-only for %s (%s; the driver JIT-compiles)" % (label, code))
        else:
            parts.append("no code that runs on %s (%s)" % (label, code))
    return "; ".join(parts)
