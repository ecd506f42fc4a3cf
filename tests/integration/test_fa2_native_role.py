"""fa2_native on this machine (local connection), for the paths the molecule scenario does not take.

Real builds with nvcc 13.0 of the test project (tests/fixtures/fa2_test_project), into STAND-IN venvs:
a plain venv with vLLM/torch dist-info records and a stand-in stock _vllm_fa2_C.abi3.so (the test
project's kernels as sm_80 SASS + compute_80 PTX). No GPU here (dgxspark_require_gpu=false).

* clone mode: a local git mirror of the test project (file://) whose csrc/cutlass is a submodule and
  whose csrc/composable_kernel submodule points nowhere (fetching it would fail the build); the commit
  comes from fa2_native_commit_table; check mode first, then the real run (the no-op second run is
  molecule's idempotence step);
* a build that fails to compile leaves the installed library as it was;
* a new vLLM (pip put its own library back) means a new build;
* a source whose configure collapses FA2_ARCHS to nothing is refused after configure;
* no CUDA toolkit: a clear failure before anything is cloned;
* a prebuilt library is verified and installed without building;
* the CUDA driver library the build links against (CMake's CUDA::cuda_driver): this machine has no NVIDIA
  driver and its CUDA toolkit (put together from NVIDIA's pip wheels) has no stubs/ dir, which is the real
  case of a driverless build host: the role must stop before anything changes and say what it looked for;
  then a toolkit stand-in with a stubs/libcuda.so must be found and linked. The other builds here link
  against a STAND-IN libcuda.so given as fa2_native_cuda_driver_library: an empty library with the driver's
  soname libcuda.so.1, made with gcc, because there is no driver on this machine;
* a numerics gate that fails puts the previous library back and fails the host (a STAND-IN nvidia-smi
  reports a GB10, so the role runs the gate; the stand-in venv has no torch, so the harness cannot pass).
The tests run in file order and share the mirror, the fleet cache and the first venv.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fa2_support  # noqa: E402

from ansible_collections.dgxspark.vllm.plugins.module_utils import fa2_source as fs  # noqa: E402

ROOT = fa2_support.ROOT
BIN = Path(sys.executable).parent
LIB = "_vllm_fa2_C.abi3.so"

# Skipped without nvcc, except under CI=true, where a missing toolkit fails (see fa2_support.nvcc_or_skip_module).
fa2_support.nvcc_or_skip_module()


def git(*args, cwd=None):
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t", GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="protocol.file.allow",
               GIT_CONFIG_VALUE_0="always")
    return subprocess.run(["git"] + list(args), cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("fa2")
    tools = fa2_support.buildtools()
    stock = base / "stock.so"
    subprocess.run(["bash", str(fa2_support.FIXTURE / "tools" / "build_stock_standin.sh"), str(stock), sys.executable],
                   check=True, capture_output=True)

    # the mirror: CUTLASS stand-in repo, and the project with csrc/cutlass as a submodule
    cutlass = base / "mirror" / "cutlass"
    shutil.copytree(fa2_support.FIXTURE / "csrc" / "cutlass", cutlass)
    git("init", "-q", "-b", "main", cwd=cutlass)
    git("add", "-A", cwd=cutlass)
    git("commit", "-qm", "cutlass stand-in", cwd=cutlass)
    project = base / "mirror" / "flash-attention"
    shutil.copytree(fa2_support.FIXTURE, project, ignore=shutil.ignore_patterns("cutlass"))
    git("init", "-q", "-b", "main", cwd=project)
    git("add", "-A", cwd=project)
    git("submodule", "add", "-q", "file://%s" % cutlass, "csrc/cutlass", cwd=project)
    # a ROCm-style submodule whose URL leads nowhere: fetching it would fail
    git("config", "-f", ".gitmodules", "submodule.csrc/composable_kernel.path", "csrc/composable_kernel", cwd=project)
    git("config", "-f", ".gitmodules", "submodule.csrc/composable_kernel.url", "file://%s/nowhere.git" % base, cwd=project)
    git("update-index", "--add", "--cacheinfo",
        "160000,%s,csrc/composable_kernel" % git("rev-parse", "HEAD", cwd=cutlass).strip(), cwd=project)
    git("add", ".gitmodules", cwd=project)
    git("commit", "-qm", "fa2 test project", cwd=project)
    stub = base / "driver-stub" / "libcuda.so"         # STAND-IN: see the module docstring
    stub.parent.mkdir()
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(stub), "-x", "c", "/dev/null"],
                   check=True, capture_output=True)
    return {"base": base, "tools": tools, "stock": stock, "mirror": project, "driver_stub": stub,
            "commit": git("rev-parse", "HEAD", cwd=project).strip(),
            "cache": base / "fleet-cache"}


def make_venv(path, stock, vllm="0.33.0"):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    site = Path(subprocess.run([str(path / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "vllm" / "vllm_flash_attn").mkdir(parents=True)
    (site / "vllm" / "__init__.py").write_text('"""stand-in vllm package"""\n')
    (site / "vllm" / "vllm_flash_attn" / "__init__.py").write_text("")
    for name, version in (("vllm", vllm), ("torch", "2.14.0+cu130")):
        info = site / ("%s-%s.dist-info" % (name, version))
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: %s\nVersion: %s\n" % (name, version))
    shutil.copy(stock, site / "vllm" / "vllm_flash_attn" / LIB)
    return site / "vllm" / "vllm_flash_attn"


def play(world, tmp, variables, check=False, path_env=None):
    playbook = tmp / "play.yml"
    playbook.write_text("- hosts: all\n  gather_facts: false\n  roles:\n    - dgxspark.vllm.fa2_native\n")
    inventory = tmp / "inventory.yml"
    hostvars = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                "dgxspark_require_gpu": False, "fa2_native_manage_packages": False,
                "fa2_native_cmake": str(world["tools"]["cmake"]), "fa2_native_fleet_cache": str(world["cache"]),
                "fa2_native_progress_interval": 20, "fa2_native_cuda_driver_library": str(world["driver_stub"])}
    hostvars.update(variables)
    inventory.write_text(json.dumps({"all": {"hosts": {"localhost": hostvars}}}))
    env = {"PATH": path_env or (str(BIN) + ":/usr/local/bin:/usr/bin:/bin"), "HOME": str(Path.home()),
           "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1", "LC_ALL": "C.UTF-8",
           "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
           "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "protocol.file.allow", "GIT_CONFIG_VALUE_0": "always"}
    argv = [str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook)] + (["--check"] if check else [])
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    out = proc.stdout + proc.stderr
    recap = re.search(r"^localhost\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", out, re.M)
    assert recap, out[-3000:]
    return {"rc": proc.returncode, "out": out, "changed": int(recap.group(2)), "failed": int(recap.group(4))}


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def listing(directory):
    return sorted(p.name for p in Path(directory).iterdir())


@pytest.fixture(scope="module")
def clone_host(world):
    tmp = world["base"] / "clone"
    tmp.mkdir()
    libdir = make_venv(tmp / "venv", world["stock"])
    variables = {"fa2_native_venv_path": str(tmp / "venv"), "fa2_native_work_dir": str(tmp / "work"),
                 "fa2_native_git_url": "file://%s" % world["mirror"],
                 "fa2_native_commit_table": {"0.33.0": world["commit"]}}
    return {"tmp": tmp, "libdir": libdir, "vars": variables}


def test_clone_mode_check_mode_changes_nothing(world, clone_host):
    result = play(world, clone_host["tmp"], clone_host["vars"], check=True)
    assert result["rc"] == 0 and result["failed"] == 0, result["out"][-3000:]
    assert result["changed"] >= 1, "check mode must say that it would install"
    assert "check mode: would build" in result["out"]
    assert listing(clone_host["libdir"]) == ["__init__.py", LIB]
    assert not (clone_host["tmp"] / "work").exists()


def test_clone_mode_builds_from_the_mirror_with_only_the_cutlass_submodule(world, clone_host):
    result = play(world, clone_host["tmp"], clone_host["vars"])
    assert result["rc"] == 0, result["out"][-4000:]
    libdir = clone_host["libdir"]
    manifest = json.loads((libdir / (LIB + ".dgxspark.json")).read_text())
    assert manifest["source"]["kind"] == "table" and manifest["key"]["fa_commit"] == world["commit"]
    assert manifest["fa2_archs"] == "12.1" and manifest["built_on"] == "localhost"
    assert sha(libdir / LIB) == manifest["sha256"]
    assert sha(libdir / (LIB + ".stock")) == sha(world["stock"])
    listed = fa2_support.cuobjdump_listing(world["tools"]["cuobjdump"], libdir / LIB)
    assert listed == {"sass": ["sm_121"], "ptx": []}, "cross-check with cuobjdump from PyPI"
    src = clone_host["tmp"] / "work" / "src" / "flash-attention"
    assert git("rev-parse", "HEAD", cwd=src).strip() == world["commit"]
    assert (src / "csrc" / "cutlass" / "include" / "cutlass" / "fixture_numeric.h").is_file()
    ck = src / "csrc" / "composable_kernel"
    assert not ck.exists() or not any(ck.iterdir()), "the ROCm submodule must not be fetched"
    status = git("submodule", "status", cwd=src)
    assert re.search(r"^-\S+ csrc/composable_kernel$", status, re.M), status
    assert re.search(r"^ \S+ csrc/cutlass ", status, re.M), status
    assert re.search(r"FA2 build (step \d+/\d+|starting)", result["out"]), "progress is reported"
    assert "stock library %s: PTX-only for sm_121" % (libdir / LIB) in result["out"]
    assert "log: %s" % (clone_host["tmp"] / "work" / "logs") in result["out"]
    assert listing(libdir) == ["__init__.py", LIB, LIB + ".dgxspark.json", LIB + ".stock"]


def test_failing_build_leaves_the_installed_library(world, clone_host):
    libdir = clone_host["libdir"]
    before = {name: sha(libdir / name) for name in listing(libdir)}
    result = play(world, clone_host["tmp"], dict(clone_host["vars"], fa2_native_cmake_args=["-DFIXTURE_BREAK_BUILD=ON"]))
    assert result["rc"] != 0 and result["failed"] == 1
    assert "the FA2 build failed (exit code 1)" in result["out"]
    assert "deliberate compile failure" in result["out"], "the end of the log is shown"
    assert "the installed library is unchanged" in result["out"]
    assert {name: sha(libdir / name) for name in listing(libdir)} == before


def test_new_vllm_version_means_a_new_build(world, clone_host):
    """pip installed a new vLLM, which put its own library back: the manifest no longer describes the file
    in place and the key changed, so the role plans a build (shown in check mode; the build path itself is
    the one tested above)."""
    libdir = clone_host["libdir"]
    site = libdir.parent.parent
    (site / "vllm-0.33.0.dist-info").rename(site / "vllm-0.33.1.dist-info")
    (site / "vllm-0.33.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm\nVersion: 0.33.1\n")
    (libdir / LIB).unlink()
    shutil.copy(world["stock"], libdir / LIB)                 # what pip would put there
    result = play(world, clone_host["tmp"], dict(clone_host["vars"], fa2_native_commit_table={"0.33.1": world["commit"]}),
                  check=True)
    assert result["rc"] == 0 and result["changed"] >= 1, result["out"][-3000:]
    assert "vLLM's own library is in place; installing a native build" in result["out"]
    assert "check mode: would build" in result["out"]


def test_configure_that_collapses_fa2_archs_is_refused(world, tmp_path):
    """CUDA_SUPPORTED_ARCHS overwritten after the patched block, in an included file the patch does not read:
    the patch sees 12.1 supported, configure does not, and FA2_ARCHS comes out empty. The role must stop
    after configure."""
    src = tmp_path / "src"
    shutil.copytree(fa2_support.FIXTURE, src)
    (src / "cmake" / "override.cmake").write_text('set(CUDA_SUPPORTED_ARCHS "8.0;8.6;8.9;9.0;12.0")\n')
    text = (src / "CMakeLists.txt").read_text()
    text = text.replace("fixture_find_python(", 'include(${CMAKE_CURRENT_LIST_DIR}/cmake/override.cmake)\nfixture_find_python(', 1)
    (src / "CMakeLists.txt").write_text(text)
    libdir = make_venv(tmp_path / "venv", world["stock"])
    result = play(world, tmp_path, {"fa2_native_venv_path": str(tmp_path / "venv"), "fa2_native_work_dir": str(tmp_path / "work"),
                                    "fa2_native_source_dir": str(src), "fa2_native_fleet_cache": ""})
    assert result["rc"] != 0
    assert "configure printed FA2_ARCHS: (empty: FA2 would get no architecture at all); expected 12.1" in result["out"]
    assert listing(libdir) == ["__init__.py", LIB] and sha(libdir / LIB) == sha(world["stock"])


def cuda_home_standin(tmp_path):
    """A CUDA home in front of this machine's toolkit: bin/nvcc is a wrapper that runs the real nvcc (the role
    takes the toolkit's home from where nvcc really is, so a symlink would lead back to the real toolkit),
    include/ and lib/ link to the real ones, and there is no lib64/, where a test can add lib64/stubs/libcuda.so
    as a toolkit installed from NVIDIA's packages has."""
    if not Path("/usr/local/cuda/bin/nvcc").exists():
        pytest.skip("needs the CUDA toolkit at /usr/local/cuda")
    real = Path("/usr/local/cuda").resolve()
    home = tmp_path / "cuda"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "nvcc").write_text('#!/bin/sh\nexec %s/bin/nvcc "$@"\n' % real)
    (home / "bin" / "nvcc").chmod(0o755)
    for name in ("include", "lib", "nvvm"):
        if (real / name).exists():
            (home / name).symlink_to(real / name)
    return home


def test_no_driver_library_stops_before_anything_changes_then_the_toolkit_stub_is_used(world, tmp_path):
    home = cuda_home_standin(tmp_path)
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    found = fs.find_cuda_driver_library(str(home), subprocess.run([ldconfig, "-p"], capture_output=True, text=True, check=False).stdout)
    if found["path"]:
        pytest.skip("this machine has a libcuda.so (%s); the no-driver case needs a host without one" % found["path"])
    src = tmp_path / "src"
    shutil.copytree(fa2_support.FIXTURE, src)
    cmakelists = (src / "CMakeLists.txt").read_text()
    libdir = make_venv(tmp_path / "venv", world["stock"])
    variables = {"fa2_native_venv_path": str(tmp_path / "venv"), "fa2_native_work_dir": str(tmp_path / "work"),
                 "fa2_native_source_dir": str(src), "fa2_native_fleet_cache": "", "fa2_native_cuda_home": str(home),
                 "fa2_native_cuda_driver_library": ""}
    path_env = str(BIN) + ":/usr/bin:/bin"        # not /usr/local/bin, whose nvcc wrapper would win over the CUDA home
    result = play(world, tmp_path, variables, path_env=path_env)
    assert result["rc"] != 0 and result["failed"] == 1
    out = result["out"]
    assert "localhost: no libcuda.so to link _vllm_fa2_C against" in out, out[-3000:]
    assert "has no stub library (lib64/stubs/libcuda.so); looked at %s/lib64/libcuda.so, " % home in out, out[-3000:]
    assert "%s/lib64/stubs/libcuda.so" % home in result["out"] and "Nothing was built or changed." in result["out"]
    assert not (tmp_path / "work").exists() and (src / "CMakeLists.txt").read_text() == cmakelists
    assert listing(libdir) == ["__init__.py", LIB] and sha(libdir / LIB) == sha(world["stock"])

    given = play(world, tmp_path, dict(variables, fa2_native_cuda_driver_library=str(tmp_path / "no" / "libcuda.so")),
                 path_env=path_env)
    assert given["rc"] != 0
    assert "localhost: fa2_native_cuda_driver_library=%s does not exist on this host" % (tmp_path / "no" / "libcuda.so") in given["out"]
    assert not (tmp_path / "work").exists()

    (home / "lib64" / "stubs").mkdir(parents=True)
    shutil.copy(world["driver_stub"], home / "lib64" / "stubs" / "libcuda.so")
    result = play(world, tmp_path, variables, path_env=path_env)
    assert result["rc"] == 0, result["out"][-4000:]
    log = next((tmp_path / "work" / "logs").glob("build-*.log")).read_text()
    assert "-DCUDA_cuda_driver_LIBRARY=%s/lib64/stubs/libcuda.so" % home in next(
        (tmp_path / "work").glob("fa2-build-*.sh")).read_text()
    assert "Generating done" in log
    assert json.loads((libdir / (LIB + ".dgxspark.json")).read_text())["fa2_archs"] == "12.1"


def test_missing_cuda_toolkit_fails_before_cloning(world, tmp_path):
    make_venv(tmp_path / "venv", world["stock"])
    result = play(world, tmp_path, {"fa2_native_venv_path": str(tmp_path / "venv"), "fa2_native_work_dir": str(tmp_path / "work"),
                                    "fa2_native_cuda_home": str(tmp_path / "no-cuda"), "fa2_native_git_url": "file:///nowhere"},
                  path_env=str(BIN) + ":/usr/bin:/bin")
    assert result["rc"] != 0
    assert "localhost: CUDA toolkit not found: nvcc not found on PATH or in %s/bin" % (tmp_path / "no-cuda") in result["out"]
    assert "expected 13.0 or newer" in result["out"]
    assert not (tmp_path / "work").exists(), "nothing may be cloned or created"


def test_prebuilt_library_is_verified_and_installed_without_building(world, tmp_path):
    built = next(world["cache"].glob("*/" + LIB))               # the build kept in the fleet cache above
    libdir = make_venv(tmp_path / "venv", world["stock"], vllm="0.33.1")
    variables = {"fa2_native_venv_path": str(tmp_path / "venv"), "fa2_native_work_dir": str(tmp_path / "work")}

    ptx_only = play(world, tmp_path, dict(variables, fa2_native_prebuilt=str(world["stock"])))
    assert ptx_only["rc"] != 0
    assert "PTX-only for sm_121" in ptx_only["out"]
    assert "no SASS for sm_121 (target 12.1); SASS present: sm_80" in ptx_only["out"]
    assert "PTX present (sm_80) but PTX was not asked for" in ptx_only["out"]
    assert listing(libdir) == ["__init__.py", LIB] and sha(libdir / LIB) == sha(world["stock"])

    result = play(world, tmp_path, dict(variables, fa2_native_prebuilt=str(built), fa2_native_prebuilt_sha256=sha(built)))
    assert result["rc"] == 0, result["out"][-3000:]
    assert sha(libdir / LIB) == sha(built)
    manifest = json.loads((libdir / (LIB + ".dgxspark.json")).read_text())
    assert manifest["source"]["kind"] == "prebuilt" and manifest["built_on"] is None
    assert not (tmp_path / "work" / "logs").exists(), "nothing was built"


def test_failed_numerics_gate_restores_the_previous_library(world, tmp_path):
    """With a GPU reported (stand-in nvidia-smi printing a GB10 line), the role runs fa2_numerics.py in the venv.
    It cannot pass here (no torch, no GPU), which is exactly the failure path: the previous library must be back."""
    built = next(world["cache"].glob("*/" + LIB))
    libdir = make_venv(tmp_path / "venv", world["stock"])
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA GB10, 12.1, 580.95.05, [N/A], GPU-0b7c0a8e-0000-0000-0000-000000000000'\n")
    (fake / "nvidia-smi").chmod(0o755)
    result = play(world, tmp_path, {"fa2_native_venv_path": str(tmp_path / "venv"), "fa2_native_work_dir": str(tmp_path / "work"),
                                    "fa2_native_prebuilt": str(built), "dgxspark_require_gpu": True},
                  path_env="%s:%s:/usr/local/bin:/usr/bin:/bin" % (fake, BIN))
    assert result["rc"] != 0
    assert "localhost: the numerics gate failed for %s" % (libdir / LIB) in result["out"]
    assert "the previous library was put back" in result["out"]
    assert "No module named 'torch'" in result["out"]
    assert sha(libdir / LIB) == sha(world["stock"])
    assert not (libdir / (LIB + ".dgxspark.json")).exists()
