"""Real CUDA binaries and a real cuobjdump for the fatbin tests (shared by the module_utils and module tests).

Everything here is real: the binaries are compiled by nvcc 13.0 (/usr/local/cuda/bin/nvcc) when the test
session first asks for them, cuobjdump is NVIDIA's own from PyPI (nvidia-cuda-cuobjdump), and zstandard is the
PyPI package. The PyPI packages are installed once into <repo>/.cache/ with `pip install --target` and reused.
Builds are kept under <repo>/.cache/fatbin-builds/<key>, the key being a hash of nvcc's version and every
source and argument, so the two test files (and ansible-test units, which runs each test in a forked
process) share one set of builds; a changed toolkit or build list builds afresh.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
CACHE = ROOT / ".cache"
NVCC = Path(os.environ.get("DGX_NVCC", "/usr/local/cuda/bin/nvcc"))
CUOBJDUMP_PIN = "nvidia-cuda-cuobjdump==13.5.37"
ZSTANDARD_PIN = "zstandard==0.25.0"

KERNELS_CU = r"""
// a device function that is not a kernel: a FUNC symbol without the entry mark in -rdc cubins
__device__ __noinline__ float bump(float v) { return v + 1.0f; }
__global__ void add_one(float *x, int n) { int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) x[i] = bump(x[i]); }
__global__ void scale(float *x, float a, int n) { int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) x[i] *= a; }
extern "C" __global__ void plain_c(int *p) { *p = 7; }
"""
# A second translation unit, for the library whose kernels do not all have the same archs.
EXTRA_CU = r"""
__global__ void late_kernel(double *x) { x[0] = 42.0; }
"""
KERNEL_NAMES = ["_Z7add_onePfi", "_Z5scalePffi", "plain_c"]

SM121 = ["-gencode", "arch=compute_121,code=sm_121"]
SM80 = ["-gencode", "arch=compute_80,code=sm_80"]
PTX80 = ["-gencode", "arch=compute_80,code=compute_80"]
SHARED = ["-shared", "-Xcompiler", "-fPIC"]
OBJECT = ["-c", "-Xcompiler", "-fPIC"]

# name -> (source, nvcc arguments). Each is one real nvcc run.
BUILDS = {
    "sm121.so": ("k.cu", SHARED + SM121),
    "sm80_ptx.so": ("k.cu", SHARED + SM80 + PTX80),
    "both.so": ("k.cu", SHARED + SM121 + SM80 + PTX80),
    "_vllm_fa2_C.abi3.so": ("k.cu", SHARED + SM80 + PTX80),  # the FA2 library's file name
    "lz4.o": ("k.cu", OBJECT + SM80 + PTX80 + ["--compress-mode=speed"]),
    "zstd_all.o": ("k.cu", OBJECT + SM80 + PTX80 + ["--compress-mode=size"]),
    "plain.o": ("k.cu", OBJECT + SM80 + PTX80 + ["--compress-mode=none"]),
    "rdc.o": ("k.cu", ["-rdc=true"] + OBJECT + SM121 + PTX80),
    # a library with both sections: .nv_fatbin (linked) and __nv_relfatbin (relocatable); cuobjdump reads the first
    "rdc.so": ("k.cu", ["-rdc=true"] + SHARED + SM121),
    "variants.o": ("k.cu", OBJECT + ["-gencode", "arch=compute_121a,code=sm_121a", "-gencode", "arch=compute_120f,code=sm_120f",
                                     "-gencode", "arch=compute_90a,code=sm_90a", "-gencode", "arch=compute_120f,code=compute_120f"]),
    "k.fatbin": ("k.cu", ["-fatbin"] + SM121 + SM80 + PTX80),
    "lto.o": ("k.cu", ["-dc", "-Xcompiler", "-fPIC", "-gencode", "arch=compute_90,code=lto_90"] + SM121),
    "extra_sm80.o": ("extra.cu", OBJECT + SM80),
    "main_both.o": ("k.cu", OBJECT + SM121 + SM80),
}

_BUILT = {}


def _run(argv, cwd):
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError("%s failed (rc=%d):\n%s%s" % (" ".join(map(str, argv)), proc.returncode, proc.stdout, proc.stderr))
    return proc


def _aarch64_assembler():
    """An assembler for aarch64: LLVM's llvm-mc (Debian llvm-14 here), else GNU as for aarch64, installed if need be."""
    llvm = shutil.which("llvm-mc") or next(iter(sorted(glob.glob("/usr/lib/llvm-*/bin/llvm-mc"))), None)
    if llvm:
        return [llvm, "-triple=aarch64-linux-gnu", "-filetype=obj"]
    gnu = shutil.which("aarch64-linux-gnu-as")
    if not gnu and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "binutils-aarch64-linux-gnu"]):
            subprocess.run(argv, capture_output=True, check=False, env=env)
        gnu = shutil.which("aarch64-linux-gnu-as")
    if gnu:
        return [gnu]
    raise RuntimeError("no aarch64 assembler: install llvm (llvm-mc) or binutils-aarch64-linux-gnu")


def _assemble_aarch64(fatbin, out, cwd):
    """Put a real nvcc fatbin into a real aarch64 ELF object, in the section nvcc uses (.nv_fatbin).

    The ELF wrapper comes from an assembler, not from nvcc: there is no aarch64 host compiler or CUDA
    sbsa target here. The fatbin inside is nvcc's own output, byte for byte.
    """
    asm = Path(cwd) / "embed.s"
    asm.write_text('.section .nv_fatbin,"a"\n.p2align 3\n.incbin "%s"\n' % fatbin)
    _run(_aarch64_assembler() + ["-o", str(out), str(asm)], cwd)


def _build_key():
    """What the builds depend on: nvcc's version and every source and argument."""
    version = _run([str(NVCC), "--version"], ROOT).stdout
    blob = json.dumps({"nvcc": str(NVCC), "version": version, "builds": BUILDS, "k.cu": KERNELS_CU,
                       "extra.cu": EXTRA_CU}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_all(tmp_path_factory=None):
    """Compile every binary once (per build key) under .cache/fatbin-builds; returns {name: Path}.

    tmp_path_factory is unused; it stays in the signature for the callers' session fixtures.
    """
    del tmp_path_factory
    if _BUILT:
        return dict(_BUILT)
    if not NVCC.is_file():
        raise RuntimeError("nvcc not found at %s: these tests compile real CUDA code (set DGX_NVCC)" % NVCC)
    store = CACHE / "fatbin-builds"
    store.mkdir(parents=True, exist_ok=True)
    done = store / _build_key()
    with open(store / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (done / ".complete").is_file():
            work = Path(tempfile.mkdtemp(prefix=done.name + ".", dir=store))
            try:
                _build_into(work)
                (work / ".complete").write_text("\n".join(sorted(BUILDS)) + "\n")
                if done.exists():
                    shutil.rmtree(done)
                work.rename(done)
            finally:
                if work.exists():
                    shutil.rmtree(work)
    built = {p.name: p for p in done.iterdir() if p.suffix in (".so", ".o", ".fatbin")}
    _BUILT.update(built)
    return dict(_BUILT)


def _build_into(work):
    """Run every build of BUILDS (and the mixed, aarch64 and no-CUDA ones) in the directory work."""
    (work / "k.cu").write_text(KERNELS_CU)
    (work / "extra.cu").write_text(EXTRA_CU)

    def one(name):
        source, args = BUILDS[name]
        _run([str(NVCC)] + args + ["-o", name, source], work)
        return name

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        list(pool.map(one, BUILDS))
    # A library whose second translation unit has no sm_121 code (a partly native build).
    _run([str(NVCC), "-shared", "-o", "mixed.so", "main_both.o", "extra_sm80.o"], work)
    _assemble_aarch64(work / "k.fatbin", work / "aarch64.o", work)
    (work / "no_cuda.c").write_text("int answer(void) { return 42; }\n")
    _run(["gcc", "-shared", "-fPIC", "-o", "no_cuda.so", "no_cuda.c"], work)


def pip_target(spec):
    """Install ``spec`` (pinned) into .cache/pip-target/<spec>-<python tag>/ once; returns that directory."""
    tag = "cp%d%d" % sys.version_info[:2]
    dest = CACHE / "pip-target" / ("%s-%s" % (spec.replace("==", "-"), tag))
    if (dest / ".complete").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    try:
        _run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
              "--target", str(tmp), spec], ROOT)
        (tmp / ".complete").write_text(spec + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return dest


def cuobjdump_path():
    """NVIDIA's cuobjdump from PyPI (installed once under .cache/)."""
    path = pip_target(CUOBJDUMP_PIN) / "nvidia" / "cu13" / "bin" / "cuobjdump"
    if not os.access(path, os.X_OK):
        raise RuntimeError("%s did not install %s" % (CUOBJDUMP_PIN, path))
    return path


def zstandard_dir():
    """A directory that holds the zstandard package (for sys.path / PYTHONPATH)."""
    return pip_target(ZSTANDARD_PIN)


def cuobjdump(*args):
    """Run the PyPI cuobjdump; returns (rc, stdout, stderr)."""
    proc = subprocess.run([str(cuobjdump_path())] + [str(a) for a in args], capture_output=True, text=True,
                          check=False, env=dict(os.environ, LC_ALL="C"))
    return proc.returncode, proc.stdout, proc.stderr
