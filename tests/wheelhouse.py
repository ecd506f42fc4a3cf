"""Build a local wheelhouse for the molecule scenarios, once, and reuse it.

The scenarios install vLLM into a venv in a container with dgxspark.vllm.vllm_venv in wheelhouse mode
(vllm_venv_wheelhouse: --no-index --find-links), so the container needs no index and a second converge
downloads nothing. This script fills the wheelhouse on the controller with `pip download`; the scenario
mounts it into the container read-only.

    python tests/wheelhouse.py                       # the host_prep set into .cache/wheelhouse/host_prep
    python tests/wheelhouse.py --dest DIR --no-deps vllm==0.33.0 torch==2.13.0+cpu numpy

Requirements given after --no-deps are downloaded without their dependencies; the others with them.
The wheels are chosen for the container, not for the controller: CPython --python-version (default 3.11,
Debian 12's) on manylinux --arch (default: this machine's). A stamp file records the request; when it matches
and every recorded wheel is still there, nothing is downloaded and the script prints "unchanged".
Otherwise it prints "changed". Either way the last line is the stamp as JSON.

pip's own configuration applies (on the CI machines its find-links /opt/wheels holds the CPU torch wheel
torch-2.13.0+cpu for cp311 x86_64, which is not on PyPI).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What the host_prep scenario installs: the real vLLM 0.33.0 wheel from PyPI without its dependencies,
# plus what its attention modules import on a CPU-only machine (FACTS.md section 4), CMake for Debian 12
# (its apt CMake is 3.25) and the real triton wheel for the triton step. packaging 25.0 is there for the
# side_effect's in-place spec change (26.3 -> 25.0 -> 26.3).
HOST_PREP_NO_DEPS = ["vllm==0.33.0", "packaging==25.0"]
HOST_PREP_DEPS = ["torch==2.13.0+cpu", "numpy==2.4.6", "packaging==26.3", "regex==2026.11.15",
                  "cmake==3.31.10", "triton==3.9.0"]

STAMP = ".dgxspark-wheelhouse.json"


def target_args(python_version: str, arch: str) -> list[str]:
    """pip download options selecting wheels for CPython python_version on glibc Linux / arch."""
    nodot = python_version.replace(".", "")
    args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", python_version,
            "--abi", "cp" + nodot, "--abi", "abi3", "--abi", "none"]
    for minor in range(17, 37):  # manylinux_2_17 .. manylinux_2_36 (Debian 12's glibc)
        args += ["--platform", "manylinux_2_%d_%s" % (minor, arch)]
    args += ["--platform", "manylinux2014_%s" % arch, "--platform", "linux_%s" % arch]
    return args


def request_key(no_deps, deps, python_version, arch) -> str:
    blob = json.dumps({"no_deps": sorted(no_deps), "deps": sorted(deps), "python": python_version, "arch": arch},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def read_stamp(dest: Path):
    try:
        return json.loads((dest / STAMP).read_text())
    except (OSError, ValueError):
        return None


def up_to_date(dest: Path, key: str) -> bool:
    stamp = read_stamp(dest)
    return bool(stamp and stamp.get("key") == key and stamp.get("files")
                and all((dest / name).is_file() for name in stamp["files"]))


def pip_download(dest: Path, requirements, with_deps: bool, python_version: str, arch: str):
    if not requirements:
        return
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--dest", str(dest)]
    argv += target_args(python_version, arch)
    if not with_deps:
        argv.append("--no-deps")
    subprocess.run(argv + list(requirements), check=True)


def build(dest: Path, no_deps, deps, python_version: str = "3.11", arch: str | None = None) -> tuple[bool, dict]:
    """Fill dest; return (changed, stamp). Safe to call from several processes at once (file lock)."""
    arch = arch or platform.machine()
    dest.mkdir(parents=True, exist_ok=True)
    key = request_key(no_deps, deps, python_version, arch)
    with open(dest / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if up_to_date(dest, key):
            return False, read_stamp(dest)
        pip_download(dest, no_deps, False, python_version, arch)
        pip_download(dest, deps, True, python_version, arch)
        files = sorted(p.name for p in dest.glob("*.whl"))
        stamp = {"key": key, "no_deps": list(no_deps), "deps": list(deps), "python": python_version,
                 "arch": arch, "files": files}
        tmp = dest / (STAMP + ".tmp")
        tmp.write_text(json.dumps(stamp, indent=1) + "\n")
        tmp.replace(dest / STAMP)
        return True, stamp


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=ROOT / ".cache" / "wheelhouse" / "host_prep")
    parser.add_argument("--python-version", default="3.11")
    parser.add_argument("--arch", default=platform.machine())
    parser.add_argument("--no-deps", nargs="*", default=None, metavar="REQ",
                        help="requirements downloaded without dependencies")
    parser.add_argument("requirements", nargs="*", help="requirements downloaded with their dependencies")
    args = parser.parse_args(argv)
    if args.no_deps is None and not args.requirements:
        no_deps, deps = HOST_PREP_NO_DEPS, HOST_PREP_DEPS
    else:
        no_deps, deps = args.no_deps or [], args.requirements
    changed, stamp = build(args.dest, no_deps, deps, args.python_version, args.arch)
    print("changed" if changed else "unchanged")
    print(json.dumps(stamp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
