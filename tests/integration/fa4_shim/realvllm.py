"""Cached CPU venvs holding the real vLLM code from PyPI wheels, for the shim's integration tests.

Layout under <repo>/.cache/fa4-real/ (git-ignored), each step skipped when its stamp matches:

- wheelhouse/: every wheel the venvs need, fetched once with ``pip download`` (torch 2.13.0+cpu comes
  from the machine's find-links /opt/wheels). The molecule scenario fa4_shim mounts it too.
- base/: a venv with torch (CPU), triton, numpy, packaging, regex, einops and apache-tvm-ffi.
- hub/: a venv with the real huggingface_hub client only (the kernel download tests).
- vllm-<version>/: one venv per vLLM release with vllm and quack-kernels installed --no-deps and
  the nvidia-cutlass-dsl release that vLLM pins; a .pth file adds base/'s site-packages, so torch
  is unpacked once for all releases.

Each venv is built under a temporary name and renamed when complete, so an interrupted build
leaves nothing half-made behind. Tests never write into these venvs: they use overlay venvs
(``overlay()``) whose site-packages add a release's venv and hold the shim under test.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
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

# Every vLLM release from 0.24 to 0.33, each with the nvidia-cutlass-dsl version its wheel pins and a
# quack-kernels release that fits it (0.24-0.26 only ask for quack-kernels>=0.3.3 / >=0.4.0: 0.4.1 imports with
# cutlass-dsl 4.5.2, and with 4.6.0 only 0.6.1 does, the release 0.27 pins; later releases pin one).
# get_flash_attn_version has 4 parameters up to 0.28 and 7 from 0.29.
ALL_RELEASES = {
    "0.24.0": {"no_deps": ["vllm==0.24.0", "quack-kernels==0.4.1"], "deps": ["nvidia-cutlass-dsl==4.5.2"]},
    "0.25.0": {"no_deps": ["vllm==0.25.0", "quack-kernels==0.4.1"], "deps": ["nvidia-cutlass-dsl==4.5.2"]},
    "0.25.1": {"no_deps": ["vllm==0.25.1", "quack-kernels==0.4.1"], "deps": ["nvidia-cutlass-dsl==4.5.2"]},
    "0.26.0": {"no_deps": ["vllm==0.26.0", "quack-kernels==0.6.1"], "deps": ["nvidia-cutlass-dsl==4.6.0"]},
    "0.27.0": {"no_deps": ["vllm==0.27.0", "quack-kernels==0.6.1"], "deps": ["nvidia-cutlass-dsl==4.6.0"]},
    "0.27.1": {"no_deps": ["vllm==0.27.1", "quack-kernels==0.6.1"], "deps": ["nvidia-cutlass-dsl==4.6.0"]},
    "0.28.0": {"no_deps": ["vllm==0.28.0", "quack-kernels==0.6.4"], "deps": ["nvidia-cutlass-dsl==4.6.2"]},
    "0.29.0": {"no_deps": ["vllm==0.29.0", "quack-kernels==0.6.4"], "deps": ["nvidia-cutlass-dsl==4.6.2"]},
    "0.30.0": {"no_deps": ["vllm==0.30.0", "quack-kernels==0.6.5"], "deps": ["nvidia-cutlass-dsl==4.7.1"]},
    "0.31.0": {"no_deps": ["vllm==0.31.0", "quack-kernels==0.6.5"], "deps": ["nvidia-cutlass-dsl==4.7.1"]},
    "0.32.0": {"no_deps": ["vllm==0.32.0", "quack-kernels==0.6.5"], "deps": ["nvidia-cutlass-dsl==4.8.0"]},
    "0.33.0": {"no_deps": ["vllm==0.33.0", "quack-kernels==0.6.5"], "deps": ["nvidia-cutlass-dsl==4.8.0"]},
}
# What the tests install by default (CI): the oldest and the newest 4-parameter release and the newest one.
# DGX_FA4_RELEASES="all" (or a space-separated list of versions) selects others; each costs ~1 GB of disk.
# 0.33.0 is always in the wheelhouse: the molecule scenarios (fa4_shim, default) and benchmarks/fleet.py use it.
DEFAULT_RELEASES = ["0.24.0", "0.28.0", "0.33.0"]
ALWAYS = "0.33.0"


def selected_releases():
    wanted = os.environ.get("DGX_FA4_RELEASES", "").split()
    if wanted == ["all"]:
        return list(ALL_RELEASES)
    unknown = [v for v in wanted if v not in ALL_RELEASES]
    if unknown:
        raise ValueError("DGX_FA4_RELEASES names releases realvllm.py does not know: %s" % ", ".join(unknown))
    chosen = wanted or list(DEFAULT_RELEASES)
    return [v for v in ALL_RELEASES if v in chosen or v == ALWAYS]


RELEASES = {version: ALL_RELEASES[version] for version in selected_releases()}

# What the molecule scenario fa4_shim needs besides: the role's packages (kernels with its dependencies; the
# others are above) and uv, whose binary the scenario's prepare step takes out of its wheel.
ROLE_PACKAGES = ["kernels==0.17.2"]
MOLECULE_NO_DEPS = ["uv==0.13.8"]
# An older einops for test_role_packages.py: a package vLLM requires, installed at another version than asked.
TEST_NO_DEPS = ["einops==0.8.1"]
# The Hub client of test_kernel_download.py: the version kernels==0.17.2 resolves to, with its dependencies.
HUB_CLIENT = ["huggingface_hub==2.4.0"]


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


_HELD = []


def _exclusive(build):
    """Run build holding CACHE/.lock, so that test processes (scripts/test.sh runs two) fill the cache one at a time.

    The ensure functions call each other; the lock is taken once per process (flock would wait on itself).
    """
    @functools.wraps(build)
    def locked(*args, **kwargs):
        with contextlib.ExitStack() as stack:
            if not _HELD:
                CACHE.mkdir(parents=True, exist_ok=True)
                lock = stack.enter_context(open(CACHE / ".lock", "w"))
                fcntl.flock(lock, fcntl.LOCK_EX)
            _HELD.append(build.__name__)
            stack.callback(_HELD.pop)
            return build(*args, **kwargs)
    return locked


@_exclusive
def ensure_wheelhouse():
    """Fetch every wheel once (pip download skips the files already there)."""
    want = _stamp(BASE, RELEASES, ROLE_PACKAGES, MOLECULE_NO_DEPS, TEST_NO_DEPS, HUB_CLIENT, FIND_LINKS)
    stamp = WHEELHOUSE / ".stamp"
    if stamp.is_file() and stamp.read_text() == want:
        return WHEELHOUSE
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    download = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "-d", WHEELHOUSE,
                "--only-binary=:all:"]
    _run(download + BASE + ROLE_PACKAGES + HUB_CLIENT)
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


@_exclusive
def ensure_base():
    ensure_wheelhouse()
    return _build(CACHE / "base", _stamp(BASE, FIND_LINKS), lambda venv: _pip(venv / "bin" / "python", *BASE))


@_exclusive
def ensure_hub():
    """A venv with the real huggingface_hub client (no vLLM, no torch): what the role's download step runs."""
    ensure_wheelhouse()
    return _build(CACHE / "hub", _stamp(HUB_CLIENT, FIND_LINKS), lambda venv: _pip(venv / "bin" / "python", *HUB_CLIENT))


@_exclusive
def ensure_release(version):
    base = ensure_base()
    spec = ALL_RELEASES[version]
    if version not in RELEASES:
        raise ValueError("vLLM %s is not selected (DGX_FA4_RELEASES); its wheels are not in the wheelhouse" % version)
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

    shim: None (vLLM alone), "dgxspark" (this collection's shim and .pth) or "seed" (the seed-style stand-in).
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
    # python realvllm.py wheelhouse | base | hub | <version>: build that (idempotently); print its path, then
    # "changed" or "unchanged" (the molecule scenario's prepare step reports it honestly).
    what = sys.argv[1] if len(sys.argv) > 1 else "wheelhouse"
    target = {"wheelhouse": WHEELHOUSE / ".stamp", "base": CACHE / "base" / ".dgx-stamp", "hub": CACHE / "hub" / ".dgx-stamp"}.get(
        what, CACHE / ("vllm-" + what) / ".dgx-stamp")
    before = target.read_text() if target.is_file() else None
    if what == "wheelhouse":
        print(ensure_wheelhouse())
    elif what == "base":
        print(ensure_base())
    elif what == "hub":
        print(ensure_hub())
    else:
        print(ensure_release(what))
    print("unchanged" if target.is_file() and target.read_text() == before else "changed")


def run_role_play(tmp_path, playbook, extra_vars):
    """Run a playbook on localhost (this Python as the host's) with this checkout as dgxspark.vllm.

    Returns the finished process and the host's PLAY RECAP line ("" when there is none)."""
    book = tmp_path / "play.yml"
    book.write_text(playbook)
    bindir = Path(sys.executable).parent
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".cache" / "collections"),
               PATH=str(bindir) + ":" + os.environ["PATH"])
    extra_vars = dict(extra_vars, ansible_python_interpreter=sys.executable)
    proc = subprocess.run([str(bindir / "ansible-playbook"), "-i", "localhost,", str(book), "-e", json.dumps(extra_vars)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    recap = [line for line in proc.stdout.splitlines() if line.startswith("localhost") and "changed=" in line]
    return proc, recap[-1] if recap else ""
