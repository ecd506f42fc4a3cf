"""Unit tests of plugins/module_utils/fatbin.py against real CUDA binaries.

The binaries are compiled by nvcc in this test session (fatbin_testlib.BUILDS) and every reading of the
Python reader is checked against NVIDIA's own cuobjdump (PyPI nvidia-cuda-cuobjdump). The two symbol
listing formats of cuobjdump are also read from real output captured in tests/fixtures/cuobjdump/. Two
stand-ins are used, each named in its test's docstring: a Python without a Zstandard module (the reader's
codec lookup replaced) and a cuobjdump that prints a symbol format no release prints (a shell script).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from ansible_collections.dgxspark.vllm.plugins.module_utils import fatbin
from ansible_collections.dgxspark.vllm.tests.unit.plugins.module_utils import fatbin_testlib as lib

KERNELS = sorted(lib.KERNEL_NAMES)


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    return lib.build_all(tmp_path_factory)


@pytest.fixture
def with_zstandard(monkeypatch):
    """The real zstandard package (PyPI) importable, as on a host with python3-zstandard installed."""
    monkeypatch.syspath_prepend(str(lib.zstandard_dir()))
    assert fatbin.zstd_provider() in ("zstandard", "compression.zstd", "backports.zstd")


@pytest.fixture
def without_zstd(monkeypatch):
    """Stand-in: make the reader see no Zstandard module, as in a stock Python 3.12 on Ubuntu 24.04."""
    monkeypatch.setattr(fatbin, "_zstd_decompressor", lambda: (None, None))


def kinds_archs(info):
    return [(e["kind"], e["arch"]) for e in info["entries"]]


# (file, entries in file order, sass_archs, ptx_archs). The first container of a linked library is
# nvlink's device-link cubin (no kernels), one per SASS arch.
LAYOUTS = [
    ("sm121.so", [("sass", "sm_121"), ("sass", "sm_121")], ["sm_121"], []),
    ("sm80_ptx.so", [("sass", "sm_80"), ("ptx", "sm_80"), ("sass", "sm_80")], ["sm_80"], ["sm_80"]),
    ("both.so", [("sass", "sm_121"), ("sass", "sm_80"), ("sass", "sm_121"), ("ptx", "sm_80"), ("sass", "sm_80")],
     ["sm_121", "sm_80"], ["sm_80"]),
    ("lz4.o", [("ptx", "sm_80"), ("sass", "sm_80")], ["sm_80"], ["sm_80"]),
    ("zstd_all.o", [("ptx", "sm_80"), ("sass", "sm_80")], ["sm_80"], ["sm_80"]),
    ("rdc.o", [("sass", "sm_121"), ("ptx", "sm_80")], ["sm_121"], ["sm_80"]),
    ("rdc.so", [("sass", "sm_121")], ["sm_121"], []),
    ("variants.o", [("sass", "sm_121a"), ("ptx", "sm_120f"), ("sass", "sm_120"), ("sass", "sm_90a")],
     ["sm_120", "sm_121a", "sm_90a"], ["sm_120f"]),
    ("aarch64.o", [("sass", "sm_121"), ("ptx", "sm_80"), ("sass", "sm_80")], ["sm_121", "sm_80"], ["sm_80"]),
    ("k.fatbin", [("sass", "sm_121"), ("ptx", "sm_80"), ("sass", "sm_80")], ["sm_121", "sm_80"], ["sm_80"]),
]


@pytest.mark.parametrize("name, layout, sass, ptx", LAYOUTS, ids=[row[0] for row in LAYOUTS])
def test_python_reader_layout(built, name, layout, sass, ptx):
    info = fatbin.read_fatbin(str(built[name]), kernels=False)
    assert info["method"] == "python"
    assert kinds_archs(info) == layout
    assert info["sass_archs"] == sass
    assert info["ptx_archs"] == ptx
    assert info["counts"] == {"sass": sum(k == "sass" for k, _arch in layout), "ptx": sum(k == "ptx" for k, _arch in layout)}
    assert info["kernels_complete"] is False and info["kernels"] == []


CROSS_CHECKED = ["sm121.so", "sm80_ptx.so", "both.so", "_vllm_fa2_C.abi3.so", "lz4.o", "zstd_all.o", "plain.o",
                 "rdc.o", "rdc.so", "lto.o", "variants.o", "aarch64.o", "k.fatbin", "mixed.so", "extra_sm80.o"]


@pytest.mark.parametrize("name", CROSS_CHECKED)
def test_entries_agree_with_cuobjdump(built, name):
    rc, out, err = lib.cuobjdump("--list-elf", "--list-ptx", built[name])
    assert rc == 0, err
    expected = fatbin.parse_cuobjdump_list(out)
    assert expected, out
    info = fatbin.read_fatbin(str(built[name]), kernels=False)
    assert [(e["kind"], e["arch"], e["name"]) for e in info["entries"]] == \
        [(e["kind"], e["arch"], e["name"]) for e in expected]


@pytest.mark.parametrize("name", CROSS_CHECKED)
def test_kernel_names_agree_with_cuobjdump(built, with_zstandard, name):
    rc, out, err = lib.cuobjdump(*(list(fatbin.CUOBJDUMP_DUMP_ARGS) + [built[name]]))
    assert rc == 0, err
    blocks = fatbin.parse_cuobjdump_dump(out.splitlines())
    info = fatbin.read_fatbin(str(built[name]))
    assert info["kernels_complete"] is True, info["notes"]
    assert [(e["kind"], e["arch"].rstrip("f"), e["kernels"]) for e in info["entries"]] == \
        [(b["kind"], b["arch"].rstrip("f"), b["kernels"]) for b in blocks]


def test_kernels_of_the_main_library(built, with_zstandard):
    info = fatbin.read_fatbin(str(built["both.so"]))
    assert info["kernels"] == [{"name": k, "sass": ["sm_121", "sm_80"], "ptx": ["sm_80"]} for k in KERNELS]
    # the device-link cubins hold no kernels; the others hold all three
    assert [sorted(e["kernels"]) for e in info["entries"]] == [[], [], KERNELS, KERNELS, KERNELS]


def test_zstd_payloads_without_a_zstd_module_are_declared(built, without_zstd):
    """Stand-in for a Python with no Zstandard module: nvcc's default compresses PTX with zstd."""
    info = fatbin.read_fatbin(str(built["both.so"]))
    ptx = [e for e in info["entries"] if e["kind"] == "ptx"]
    assert ptx and all(e["compression"] == "zstd" and e["kernels"] is None for e in ptx)
    assert all(e["kernels"] is not None for e in info["entries"] if e["kind"] == "sass")
    assert info["kernels_complete"] is False
    assert any("1 entry not read: zstd-compressed" in note for note in info["notes"]), info["notes"]
    # kinds and archs come from the headers and are complete anyway
    assert info["sass_archs"] == ["sm_121", "sm_80"] and info["ptx_archs"] == ["sm_80"]
    assert info["kernels"] == [{"name": k, "sass": ["sm_121", "sm_80"], "ptx": []} for k in KERNELS]


def test_lz4_payload_decodes_to_the_uncompressed_build(built, without_zstd):
    """--compress-mode=speed stores LZ4; its PTX must equal the same PTX stored uncompressed."""

    def ptx_payload(path):
        data = path.read_bytes()
        machine, sections = fatbin._elf_sections(data, str(path))
        section = [s for s in sections if s["name"] == ".nv_fatbin"][0]
        raw = [e for e in fatbin.walk_fatbin(data, section["offset"], section["size"], str(path)) if e["kind"] == "ptx"][0]
        return raw, fatbin._payload(data, raw, None)

    lz4_raw, (lz4_text, why) = ptx_payload(built["lz4.o"])
    plain_raw, (plain_text, _reason) = ptx_payload(built["plain.o"])
    assert lz4_raw["compression"] == "lz4" and plain_raw["compression"] is None and why is None
    assert lz4_raw["stored_size"] < lz4_raw["size"]
    # PTX is stored as a C string; the uncompressed copy is also padded to 8 bytes
    assert lz4_text.endswith(b"}\n\n\0") and lz4_text == plain_text.rstrip(b"\0") + b"\0"
    assert b".entry _Z7add_onePfi" in lz4_text


@pytest.mark.parametrize("data, size, message", [
    (b"\x10", 1, "literals run past the end"),
    (b"\x00\x00\x00", 4, "points before the start"),
    (b"\x10a\x05\x00", 6, "points before the start"),
    (b"\x10a\x01", 6, "inside a match offset"),
    (b"\xf0", 20, "inside a literal length"),
    (b"\x20ab", 3, "not the stated 3"),
    (b"\x1fa\x01\x00", 5, "inside a match length"),
])
def test_lz4_rejects_bad_blocks(data, size, message):
    with pytest.raises(ValueError, match=message):
        fatbin.lz4_block_decompress(data, size)


def test_lz4_overlapping_match():
    # literal "ab", then copy 10 bytes from offset 2: a run that overlaps its own output
    assert fatbin.lz4_block_decompress(b"\x26ab\x02\x00", 12) == b"abababababab"


def test_aarch64_object(built):
    info = fatbin.read_fatbin(str(built["aarch64.o"]), kernels=False)
    reference = fatbin.read_fatbin(str(built["k.fatbin"]), kernels=False)
    assert info["elf_machine"] == "aarch64" and info["section"] == ".nv_fatbin"
    assert reference["section"] == "(whole file)"
    assert kinds_archs(info) == kinds_archs(reference)


def test_x86_64_library_names_its_machine(built):
    info = fatbin.read_fatbin(str(built["both.so"]), kernels=False)
    assert info["elf_machine"] == "x86_64" and info["section"] == ".nv_fatbin"


def test_linked_fatbin_is_preferred_to_the_relocatable_one(built, with_zstandard):
    info = fatbin.read_fatbin(str(built["rdc.so"]))
    assert info["section"] == ".nv_fatbin" and info["notes"] == []
    # the device-linked cubin holds every kernel, and the helper device function is not one of them
    assert sorted(info["entries"][0]["kernels"]) == KERNELS


def test_nvvm_ir_entries_are_left_out_and_noted(built):
    info = fatbin.read_fatbin(str(built["lto.o"]), kernels=False)
    assert kinds_archs(info) == [("sass", "sm_121")]
    assert "1 NVVM (link-time IR) entry not listed: neither SASS nor PTX" in info["notes"]


def test_relocatable_only_object_reads_nv_relfatbin(built):
    info = fatbin.read_fatbin(str(built["rdc.o"]), kernels=False)
    assert info["section"] == "__nv_relfatbin"
    assert any("relocatable device code" in note for note in info["notes"])


# ---------------------------------------------------------------- bad input


def _patched(built, tmp_path, source, edit):
    data = bytearray(built[source].read_bytes())
    edit(data)
    path = tmp_path / ("bad-" + source)
    path.write_bytes(bytes(data))
    return path


def _fatbin_offset(data):
    _m, sections = fatbin._elf_sections(bytes(data), "x")
    return [s for s in sections if s["name"] == ".nv_fatbin"][0]["offset"]


def _break_magic(data):
    data[_fatbin_offset(data):_fatbin_offset(data) + 4] = b"\xde\xad\xbe\xef"


def _oversize_container(data):
    struct.pack_into("<Q", data, _fatbin_offset(data) + 8, 1 << 40)


def _bad_entry_header(data):
    struct.pack_into("<I", data, _fatbin_offset(data) + 16 + 4, 8)


BAD = [
    ("garbage", lambda p: p.write_bytes(bytes(range(256)) * 4), "is not an ELF file"),
    ("empty", lambda p: p.write_bytes(b""), "is not an ELF file (it is empty)"),
    ("source", lambda p: p.write_text("__global__ void k() {}\n"), "is not an ELF file (it starts with b'__global'"),
    ("tiny elf", lambda p: p.write_bytes(b"\x7fELF\x02\x01\x01"), "truncated ELF file"),
]


@pytest.mark.parametrize("label, make, message", BAD, ids=[row[0] for row in BAD])
def test_bad_files(tmp_path, label, make, message):
    path = tmp_path / "input.bin"
    make(path)
    with pytest.raises(fatbin.FatbinError) as caught:
        fatbin.read_fatbin(str(path))
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


PATCHED = [
    ("32-bit", "no_cuda.so", lambda d: d.__setitem__(4, 1), "is a 32-bit ELF file"),
    ("big-endian", "no_cuda.so", lambda d: d.__setitem__(5, 2), "is a big-endian ELF file"),
    ("truncated", "both.so", lambda d: d.__delitem__(slice(len(d) // 2, None)), "past the end of the file"),
    ("bad magic", "both.so", _break_magic, "no fatbin container at offset 0 of the section (found 0xefbeadde"),
    ("oversized container", "both.so", _oversize_container, "claims 1099511627792 bytes"),
    ("bad entry header", "both.so", _bad_entry_header, "has a bad size (header 8"),
]


@pytest.mark.parametrize("label, source, edit, message", PATCHED, ids=[row[0] for row in PATCHED])
def test_damaged_real_files(built, tmp_path, label, source, edit, message):
    path = _patched(built, tmp_path, source, edit)
    with pytest.raises(fatbin.FatbinError, match="^" + str(path).replace(".", r"\.")) as caught:
        fatbin.read_fatbin(str(path))
    assert message in str(caught.value)


def test_elf_without_fatbin(built):
    with pytest.raises(fatbin.FatbinError) as caught:
        fatbin.read_fatbin(str(built["no_cuda.so"]))
    assert str(caught.value) == "%s (ELF x86_64) has no .nv_fatbin or __nv_relfatbin section: it holds no CUDA device code" \
        % built["no_cuda.so"]


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(fatbin.FatbinError, match="cannot open %s/nope.so: No such file" % tmp_path):
        fatbin.read_fatbin(str(tmp_path / "nope.so"))
    with pytest.raises(fatbin.FatbinError, match="cannot open %s: Is a directory" % tmp_path):
        fatbin.read_fatbin(str(tmp_path))


def test_bare_cubin_is_refused(built, tmp_path):
    cubin = tmp_path / "k.cubin"
    lib._run([str(lib.NVCC), "-cubin", "-arch=sm_90", "-o", str(cubin), str(built["sm121.so"].parent / "k.cu")], tmp_path)
    with pytest.raises(fatbin.FatbinError, match="is a bare cubin"):
        fatbin.read_fatbin(str(cubin))


# ---------------------------------------------------------------- targets


CHECKS = [
    ("sm121.so", "12.1", False, []),
    ("sm121.so", "12.1a", False, []),
    ("sm121.so", ["sm_121"], False, []),
    ("sm80_ptx.so", "12.1", False, ["no SASS for sm_121 (target 12.1); SASS present: sm_80",
                                    "PTX present (sm_80) but PTX was not asked for: the driver would JIT-compile it"]),
    ("sm80_ptx.so", "12.1a", True, ["no SASS for sm_121 (target 12.1a); SASS present: sm_80"]),
    ("sm80_ptx.so", "8.0+PTX", False, []),
    ("both.so", "12.1", False, ["PTX present (sm_80) but PTX was not asked for: the driver would JIT-compile it"]),
    ("both.so", "8.0;12.1", True, []),
    ("both.so", ["9.0", "12.1"], True, ["no SASS for sm_90 (target 9.0); SASS present: sm_121, sm_80"]),
    ("variants.o", "12.1", True, []),
    ("variants.o", "12.0 9.0", True, []),
    ("variants.o", "8.9", True, ["no SASS for sm_89 (target 8.9); SASS present: sm_120, sm_121a, sm_90a"]),
    ("mixed.so", "12.1", False, ["1 of 4 kernels have no SASS for sm_121: _Z11late_kernelPd"]),
    ("mixed.so", "8.0", False, []),
]


@pytest.mark.parametrize("name, targets, allow_ptx, problems", CHECKS)
def test_check_targets(built, with_zstandard, name, targets, allow_ptx, problems):
    info = fatbin.read_fatbin(str(built[name]))
    assert fatbin.check_targets(info, targets, allow_ptx) == problems


def test_check_targets_without_kernel_names_checks_archs_only(built):
    info = fatbin.read_fatbin(str(built["mixed.so"]), kernels=False)
    assert fatbin.check_targets(info, "12.1", False) == []


def test_check_targets_on_nothing():
    info = fatbin.summarize([], method="python")
    assert fatbin.check_targets(info, "12.1", True) == ["no CUDA code found (no SASS and no PTX)"]


DESCRIPTIONS = [
    ("sm121.so", None, "native sm_121"),
    ("sm80_ptx.so", None, "PTX-only for SM12x (sm_80 SASS + compute_80 PTX; the driver JIT-compiles)"),
    ("_vllm_fa2_C.abi3.so", "12.1a", "PTX-only for sm_121 (sm_80 SASS + compute_80 PTX; the driver JIT-compiles)"),
    ("both.so", None, "native sm_121 (also sm_80 SASS + compute_80 PTX)"),
    ("both.so", "8.0;12.1", "native sm_80 (also sm_121 SASS + compute_80 PTX); native sm_121 (also sm_80 SASS + compute_80 PTX)"),
    ("extra_sm80.o", None, "no code that runs on SM12x (sm_80 SASS)"),
    ("mixed.so", "12.1", "partly native sm_121 (1 of 4 kernels lack it; sm_75, sm_80 SASS)"),
    ("variants.o", "12.1", "native sm_121a (also sm_120, sm_90a SASS + compute_120f PTX)"),
    ("variants.o", "9.0", "native sm_90a (also sm_120, sm_121a SASS + compute_120f PTX)"),
    ("rdc.o", "9.0", "PTX-only for sm_90 (sm_121 SASS + compute_80 PTX; the driver JIT-compiles)"),
]


@pytest.mark.parametrize("name, targets, text", DESCRIPTIONS)
def test_describe(built, with_zstandard, name, targets, text):
    assert fatbin.describe(fatbin.read_fatbin(str(built[name])), targets) == text


def test_describe_minor_version_compatibility_and_nothing():
    entries = [{"kind": "sass", "arch": "sm_120", "name": "x.1.sm_120.cubin", "kernels": None}]
    info = fatbin.summarize(entries, method="cuobjdump")
    assert fatbin.describe(info, "12.1") == \
        "no native code for sm_121, but sm_120 SASS runs there by minor-version compatibility (sm_120 SASS)"
    assert fatbin.describe(fatbin.summarize([], method="python")) == "no CUDA code"


TARGETS = [
    ("12.1", 121, "", False), ("12.1a", 121, "a", False), ("8.0+PTX", 80, "", True), ("sm_121", 121, "", False),
    ("compute_90a", 90, "a", False), (12.1, 121, "", False), ("121", 121, "", False), ("12.0f", 120, "f", False),
    (" 9.0 ", 90, "", False),
]


@pytest.mark.parametrize("text, sm, suffix, ptx", TARGETS)
def test_parse_target(text, sm, suffix, ptx):
    parsed = fatbin.parse_target(text)
    assert (parsed["sm"], parsed["suffix"], parsed["ptx"]) == (sm, suffix, ptx)


@pytest.mark.parametrize("text", ["abc", "12", "1.2.3", "12.10", "", "sm_", "12.1b", "8"])
def test_parse_target_rejects(text):
    with pytest.raises(ValueError, match="target arch %r" % text.strip()):
        fatbin.parse_target(text)


def test_parse_targets_forms():
    assert [t["sm"] for t in fatbin.parse_targets("8.0;12.1")] == [80, 121]
    assert [t["sm"] for t in fatbin.parse_targets("8.0 12.1a, 9.0")] == [80, 121, 90]
    assert fatbin.parse_targets(None) == [] and fatbin.parse_targets([]) == []


# ---------------------------------------------------------------- cuobjdump output parsing


def test_parse_cuobjdump_list_lines_from_facts():
    text = "ELF file    2: k.2.sm_121.cubin\nPTX file    1: k.1.sm_80.ptx\ncuobjdump info    : something else\n"
    assert fatbin.parse_cuobjdump_list(text) == [
        {"kind": "sass", "arch": "sm_121", "name": "k.2.sm_121.cubin", "kernels": None},
        {"kind": "ptx", "arch": "sm_80", "name": "k.1.sm_80.ptx", "kernels": None},
    ]
    with pytest.raises(fatbin.FatbinError, match="cannot read the arch"):
        fatbin.parse_cuobjdump_list("ELF file    1: k.sm_90.bin\n")


def test_merge_cuobjdump_refuses_mismatched_dumps():
    entries = fatbin.parse_cuobjdump_list("ELF file    1: k.1.sm_121.cubin\nPTX file    1: k.1.sm_80.ptx\n")
    short = [{"kind": "sass", "arch": "sm_121", "kernels": ["a"]}]
    assert "2 entries" in fatbin.merge_cuobjdump(entries, short)[0]
    swapped = [{"kind": "ptx", "arch": "sm_80", "kernels": []}, {"kind": "sass", "arch": "sm_121", "kernels": []}]
    assert "disagree at k.1.sm_121.cubin" in fatbin.merge_cuobjdump(entries, swapped)[0]
    assert all(e["kernels"] is None for e in entries)


# ---------------------------------------------------------------- captured cuobjdump output, both formats

CAPTURED = Path(__file__).resolve().parents[3] / "fixtures" / "cuobjdump"
CUFILE_SASS = ["cuFileSparseGpu", "cuFileInlineGpu", "cuFileCopyGpuPosixIORetry", "cuFileCopyGpu", "cuFileGpuWaitValue32"]
CUFILE_PTX = list(reversed(CUFILE_SASS))
CAPTURED_BLOCKS = {
    # libcufile.so.0 of nvidia-cufile 1.15.1.6 (CUDA 13.0): the library the H200 check found 0 kernels in
    "libcufile-1.15.1.6": [("sass", "sm_75", CUFILE_SASS), ("sass", "sm_80", CUFILE_SASS),
                           ("ptx", "sm_86", CUFILE_PTX), ("sass", "sm_86", CUFILE_SASS)],
    # fatbin_testlib.BUILDS["rdc.o"]: _Z4bumpf is a GLOBAL FUNC without ENTRY, so not a kernel
    "rdc.o": [("sass", "sm_121", ["plain_c", "_Z5scalePffi", "_Z7add_onePfi"]),
              ("ptx", "sm_80", ["_Z7add_onePfi", "_Z5scalePffi", "plain_c"])],
}
# 13.2.51 is the oldest cuobjdump on PyPI and prints the STT_/STB_ form, as 13.0 does; 13.5.37 prints columns.
# The start of a kernel's line in each.
CUOBJDUMP_FORMATS = {"13.2.51": "STT_FUNC         STB_GLOBAL STO_ENTRY      ",
                     "13.5.37": "FUNC          GLOBAL  DEFAULT    ENTRY                                "}


def captured(binary, version):
    return (CAPTURED / ("%s.cuobjdump-%s.txt" % (binary, version))).read_text()


@pytest.mark.parametrize("version", sorted(CUOBJDUMP_FORMATS))
@pytest.mark.parametrize("binary", sorted(CAPTURED_BLOCKS))
def test_dump_parser_reads_both_symbol_formats(binary, version):
    text = captured(binary, version)
    assert any(line.startswith(CUOBJDUMP_FORMATS[version]) for line in text.splitlines())  # the form it stands for
    blocks = fatbin.parse_cuobjdump_dump(text.splitlines(True))
    assert [(b["kind"], b["arch"], b["kernels"]) for b in blocks] == CAPTURED_BLOCKS[binary]


def test_dump_parser_skips_undefined_and_non_entry_functions():
    old = [fatbin.parse_symbol_line(line) for line in captured("libcufile-1.15.1.6", "13.2.51").splitlines()
           if line.endswith(" __assertfail")]
    new = [fatbin.parse_symbol_line(line) for line in captured("libcufile-1.15.1.6", "13.5.37").splitlines()
           if line.endswith(" __assertfail")]
    assert old[0] == ("FUNC", {"GLOBAL", "DEFAULT", "U"}, "__assertfail")
    assert new[0] == ("FUNC", {"GLOBAL", "DEFAULT", "-", "U"}, "__assertfail")
    for version in CUOBJDUMP_FORMATS:
        blocks = fatbin.parse_cuobjdump_dump(captured("libcufile-1.15.1.6", version).splitlines())
        assert all("__assertfail" not in b["kernels"] for b in blocks)
        bump = [line for line in captured("rdc.o", version).splitlines() if line.endswith(" _Z4bumpf")]
        assert bump and "ENTRY" not in fatbin.parse_symbol_line(bump[0])[1]


def test_captured_dump_matches_the_reader_on_a_fresh_build(built, with_zstandard):
    """The capture of rdc.o came from the same nvcc command as BUILDS["rdc.o"]; the reader must agree with it."""
    info = fatbin.read_fatbin(str(built["rdc.o"]))
    mine = [(e["kind"], e["arch"], e["kernels"]) for e in info["entries"]]
    for version in CUOBJDUMP_FORMATS:
        blocks = fatbin.parse_cuobjdump_dump(captured("rdc.o", version).splitlines())
        assert [(b["kind"], b["arch"], b["kernels"]) for b in blocks] == mine


def test_dump_parser_refuses_an_unknown_symbol_format():
    text = captured("rdc.o", "13.5.37").replace(
        CUOBJDUMP_FORMATS["13.5.37"] + "plain_c", "0000000000000000 g F .text.plain_c 0000000000000080 plain_c")
    with pytest.raises(fatbin.FatbinError, match=r"unknown form \(entry 1, sm_121\): '0000000000000000 g F"):
        fatbin.parse_cuobjdump_dump(text.splitlines())


def test_cuobjdump_kernel_blocks_stops_on_an_unknown_format(tmp_path):
    """Stand-in: a shell script as cuobjdump, printing a symbol line no cuobjdump release prints, then output
    without end; the reader must report the line and stop the process rather than return "no kernels"."""
    fake = tmp_path / "cuobjdump"
    fake.write_text("#!/bin/sh\nprintf 'Fatbin elf code:\\n=====\\narch = sm_121\\n\\nsymbols:\\n'\n"
                    "echo '0000000000000000 g F .text 0000000000000080 plain_c'\nexec yes ''\n")
    os.chmod(str(fake), 0o755)
    blocks, error = fatbin.cuobjdump_kernel_blocks(str(fake), "any.so")
    assert blocks == []
    assert error.startswith("its output could not be read: cuobjdump symbol line in an unknown form (entry 1, sm_121)")


def test_cuobjdump_kernel_blocks_streams_real_cuobjdump(built):
    blocks, error = fatbin.cuobjdump_kernel_blocks(str(lib.cuobjdump_path()), str(built["both.so"]))
    assert error is None
    assert [(b["kind"], b["arch"], sorted(b["kernels"])) for b in blocks] == [
        ("sass", "sm_121", []), ("sass", "sm_80", []), ("sass", "sm_121", KERNELS), ("ptx", "sm_80", KERNELS),
        ("sass", "sm_80", KERNELS)]
    blocks, error = fatbin.cuobjdump_kernel_blocks(str(lib.cuobjdump_path()), str(built["no_cuda.so"]))
    assert blocks == [] and "does not contain device code (rc=255)" in error
    assert "cannot run" in fatbin.cuobjdump_kernel_blocks("/nonexistent/cuobjdump", "x")[1]
