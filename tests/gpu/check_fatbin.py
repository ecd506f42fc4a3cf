"""Cross-check the pure-Python fatbin reader with cuobjdump on the real CUDA libraries of this machine.

Meant for a GPU machine with the CUDA toolkit (cuobjdump on PATH or in /usr/local/cuda/bin) and torch
installed, with no network. From the repository root:

    python3 tests/gpu/check_fatbin.py                 # torch/lib, nvidia/*/lib, vLLM's FA2 library, an nvcc build
    python3 tests/gpu/check_fatbin.py --budget 60 extra.so ...

For each file it compares, entry by entry, the kind (SASS/PTX), arch and name that the reader in
plugins/module_utils/fatbin.py finds with what `cuobjdump --list-elf --list-ptx` prints. For files up to
--kernel-mb it also compares the kernel names of every entry the reader could decompress with
`cuobjdump --dump-elf-symbols --dump-ptx` (both symbol-list forms: STT_FUNC/STO_ENTRY up to 13.4, FUNC/ENTRY
columns from 13.5; a line in neither form is a disagreement that quotes it). On both sides a kernel is a
defined FUNC symbol marked ENTRY. A file both call "no device code" agrees too.

Prints one line per file and a summary. Exit status: 0 all agree, 1 a disagreement, 2 nothing could be checked.
The reader module is loaded by file path; the collection need not be installed.
"""

from __future__ import annotations

import argparse
import collections
import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
READER = os.path.join(REPO, "plugins", "module_utils", "fatbin.py")

KERNELS_CU = r"""
__global__ void add_one(float *x, int n) { int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) x[i] += 1.0f; }
__global__ void scale(float *x, float a, int n) { int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) x[i] *= a; }
extern "C" __global__ void plain_c(int *p) { *p = 7; }
"""


def load_reader():
    spec = importlib.util.spec_from_file_location("dgxspark_fatbin", READER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def package_dirs(name):
    try:
        spec = importlib.util.find_spec(name)  # finds the package without importing it (no CUDA init)
    except (ImportError, ValueError):
        return []
    return list(spec.submodule_search_locations or []) if spec else []


def candidates(extra, workdir, nvcc):
    """(label, path) pairs: an nvcc build, vLLM's FA2 library, torch/lib, nvidia/*/lib, then the given files."""
    found = []
    if nvcc:
        source = os.path.join(workdir, "k.cu")
        with open(source, "w") as handle:
            handle.write(KERNELS_CU)
        lib = os.path.join(workdir, "nvcc_check.so")
        argv = [nvcc, "-shared", "-Xcompiler", "-fPIC", "-gencode", "arch=compute_90,code=sm_90",
                "-gencode", "arch=compute_121,code=sm_121", "-gencode", "arch=compute_80,code=compute_80",
                "-o", lib, source]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            found.append(("nvcc build", lib))
        else:
            print("note: nvcc build failed (rc=%d): %s" % (proc.returncode, (proc.stderr or proc.stdout).strip()[-300:]))
    for base in package_dirs("vllm"):
        fa2 = os.path.join(base, "vllm_flash_attn", "_vllm_fa2_C.abi3.so")
        if os.path.isfile(fa2):
            found.append(("vllm FA2", fa2))
    for base in package_dirs("torch"):
        files = sorted(glob.glob(os.path.join(base, "lib", "*.so*")), key=os.path.getsize, reverse=True)
        found.extend(("torch/lib", f) for f in files)
    for base in package_dirs("nvidia"):
        files = sorted(glob.glob(os.path.join(base, "*", "lib", "*.so*")), key=os.path.getsize)
        found.extend(("nvidia/" + os.path.basename(os.path.dirname(os.path.dirname(f))), f) for f in files)
    found.extend(("given", os.path.abspath(f)) for f in extra)
    seen, unique = set(), []
    for label, path in found:
        real = os.path.realpath(path)
        if real not in seen and os.path.isfile(real):
            seen.add(real)
            unique.append((label, path))
    return unique


def run_cuobjdump(cuobjdump, args, timeout):
    start = time.monotonic()
    proc = subprocess.run([cuobjdump] + args, capture_output=True, text=True, errors="replace", check=False,
                          timeout=timeout, env=dict(os.environ, LC_ALL="C"))
    return proc, time.monotonic() - start


def arch_span(archs):
    nums = sorted(archs, key=lambda a: int("".join(ch for ch in a[3:] if ch.isdigit())))
    return "%s..%s" % (nums[0], nums[-1]) if len(nums) > 2 else ",".join(nums) or "-"


def check_file(fb, cuobjdump, path, kernel_bytes, deadline):
    """Returns (status, line) with status 'agree', 'disagree' or 'skipped'."""
    size = os.path.getsize(path)
    name = os.path.basename(path)
    remaining = deadline - time.monotonic()
    if remaining < 5:
        return "skipped", "SKIP      %s (%d MB): time budget spent" % (name, size >> 20)
    start = time.monotonic()
    try:
        info = fb.read_fatbin(path, kernels=False)
        py_error = None
    except fb.FatbinError as exc:
        info, py_error = None, str(exc)
    py_time = time.monotonic() - start
    try:
        proc, tool_time = run_cuobjdump(cuobjdump, list(fb.CUOBJDUMP_LIST_ARGS) + [path], remaining)
    except subprocess.TimeoutExpired:
        return "skipped", "SKIP      %s (%d MB): cuobjdump ran past the time budget" % (name, size >> 20)
    tool_text = (proc.stdout + proc.stderr).strip()

    if py_error is not None:
        no_code = "holds no CUDA device code" in py_error or "is not an ELF file" in py_error
        if no_code and proc.returncode != 0 and "does not contain device code" in tool_text:
            return "agree", "NO-CODE   %s: both say it has no device code" % name
        return "disagree", ("DISAGREE  %s: python: %s | cuobjdump rc=%d: %s"
                            % (name, py_error, proc.returncode, tool_text[-300:]))
    if proc.returncode != 0:
        return "disagree", "DISAGREE  %s: python read %d entries, cuobjdump failed rc=%d: %s" % (
            name, len(info["entries"]), proc.returncode, tool_text[-300:])
    expected = fb.parse_cuobjdump_list(proc.stdout)
    mine = [(e["kind"], e["arch"], e["name"]) for e in info["entries"]]
    theirs = [(e["kind"], e["arch"], e["name"]) for e in expected]
    if mine != theirs:
        first = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs)))
        return "disagree", "DISAGREE  %s: python %d entries, cuobjdump %d; first difference at #%d: %s vs %s" % (
            name, len(mine), len(theirs), first, mine[first] if first < len(mine) else None,
            theirs[first] if first < len(theirs) else None)

    compression = collections.Counter(e["compression"] or "none" for e in info["entries"])
    line = "AGREE     %s (%d MB, %s %s): %d SASS [%s] + %d PTX [%s]; compression %s; python %.2fs, cuobjdump %.2fs" % (
        name, size >> 20, info["elf_machine"], info["section"], info["counts"]["sass"], arch_span(info["sass_archs"]),
        info["counts"]["ptx"], arch_span(info["ptx_archs"]),
        ",".join("%s=%d" % kv for kv in sorted(compression.items())), py_time, tool_time)

    # The reader decodes LZ4 in pure Python (about 9 MB/s measured); skip the names when that would not fit.
    lz4_seconds = sum(e["size"] for e in info["entries"] if e["compression"] == "lz4") / 9e6
    if size > kernel_bytes:
        line += "; kernel names not compared (over --kernel-mb)"
    elif deadline - time.monotonic() < 10 + 2 * lz4_seconds:
        line += "; kernel names not compared (time budget; %.0f s of LZ4 to decode)" % lz4_seconds
    else:
        full = fb.read_fatbin(path, kernels=True)
        blocks, error = fb.cuobjdump_kernel_blocks(cuobjdump, path)
        if error:
            return "disagree", "DISAGREE  %s: cuobjdump --dump-elf-symbols --dump-ptx failed: %s" % (name, error)
        if len(blocks) != len(full["entries"]):
            return "disagree", "DISAGREE  %s: %d entries but cuobjdump dumped %d code blocks" % (
                name, len(full["entries"]), len(blocks))
        compared = 0
        for entry, block in zip(full["entries"], blocks):
            if entry["kernels"] is None:
                continue
            compared += 1
            if entry["kernels"] != block["kernels"]:
                return "disagree", "DISAGREE  %s: kernels of %s: python %d names, cuobjdump %d (e.g. %s)" % (
                    name, entry["name"], len(entry["kernels"]), len(block["kernels"]),
                    sorted(set(entry["kernels"]) ^ set(block["kernels"]))[:3])
        line += "; kernel names agree in %d/%d entries (%d kernels)" % (compared, len(blocks), len(full["kernels"]))
        if compared < len(blocks):
            line += " [rest unread: %s]" % "; ".join(full["notes"])[:160]
    return "agree", line


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("files", nargs="*", help="more ELF files to check")
    parser.add_argument("--cuobjdump", help="cuobjdump to compare with (default: PATH, then /usr/local/cuda/bin)")
    parser.add_argument("--nvcc", default="/usr/local/cuda/bin/nvcc", help="nvcc for a fresh build ('' to skip)")
    parser.add_argument("--budget", type=float, default=90.0, help="seconds for all the checks (default 90)")
    parser.add_argument("--kernel-mb", type=float, default=200.0,
                        help="compare kernel names for files up to this size in MB (default 200)")
    parser.add_argument("--max-files", type=int, default=40, help="check at most this many files (default 40)")
    args = parser.parse_args()

    deadline = time.monotonic() + args.budget
    fb = load_reader()
    cuobjdump = args.cuobjdump or shutil.which("cuobjdump") or (
        "/usr/local/cuda/bin/cuobjdump" if os.access("/usr/local/cuda/bin/cuobjdump", os.X_OK) else None)
    if not cuobjdump:
        print("ERROR: cuobjdump not found on PATH or in /usr/local/cuda/bin; pass --cuobjdump")
        return 2
    version = subprocess.run([cuobjdump, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    print("reader: %s" % READER)
    print("cuobjdump: %s (%s)" % (cuobjdump, version.splitlines()[-1] if version else "version unknown"))
    print("python %s; zstd module: %s" % (sys.version.split()[0], fb.zstd_provider() or "none (zstd payloads: names unread)"))

    nvcc = args.nvcc if args.nvcc and os.access(args.nvcc, os.X_OK) else None
    results = collections.Counter()
    with tempfile.TemporaryDirectory(prefix="check_fatbin.") as workdir:
        files = candidates(args.files, workdir, nvcc)[:args.max_files]
        if not files:
            print("ERROR: no files to check (no torch, no nvidia packages, no nvcc, no arguments)")
            return 2
        for label, path in files:
            status, line = check_file(fb, cuobjdump, path, args.kernel_mb * (1 << 20), deadline)
            results[status] += 1
            print("%-14s %s" % (label, line))
            sys.stdout.flush()
    checked = results["agree"] + results["disagree"]
    print("SUMMARY: %d agree, %d disagree, %d skipped (of %d files) in %.0f s" % (
        results["agree"], results["disagree"], results["skipped"], len(files), args.budget - (deadline - time.monotonic())))
    if results["disagree"]:
        return 1
    return 0 if checked else 2


if __name__ == "__main__":
    sys.exit(main())
