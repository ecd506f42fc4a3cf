"""Tests of the cuda_fatbin_info module, run as Ansible runs it (a subprocess with JSON arguments).

The inputs are real: libraries compiled by nvcc in this session (see module_utils/fatbin_testlib.py),
NVIDIA's cuobjdump from PyPI, and zstandard from PyPI where a test says so. Nothing is a stand-in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.dgxspark.vllm.tests.unit.module_env import ansible_doc, module_pythonpath
from ansible_collections.dgxspark.vllm.tests.unit.plugins.module_utils import fatbin_testlib as lib

ROOT = Path(__file__).resolve().parents[4]
COLLECTIONS = ROOT / ".cache" / "collections"
MODULE = ROOT / "plugins" / "modules" / "cuda_fatbin_info.py"

KERNELS = sorted(lib.KERNEL_NAMES)
SYSTEM_PATH = "/usr/bin:/bin"


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    return lib.build_all(tmp_path_factory)


@pytest.fixture(scope="session")
def cuobjdump_dir():
    return str(lib.cuobjdump_path().parent)


def run_module(tmp_path, args, path=SYSTEM_PATH, pythonpath=()):
    argsfile = tmp_path / "args.json"
    argsfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = {"PATH": path, "PYTHONPATH": module_pythonpath(*pythonpath)}
    proc = subprocess.run([sys.executable, str(MODULE), str(argsfile)], capture_output=True, text=True, env=env,
                          check=False)
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def no_toolkit(tmp_path, **args):
    """Arguments that keep the module from finding a cuobjdump in /usr/local/cuda."""
    return dict(args, cuda_home=str(tmp_path / "no-cuda"))


def brief(result):
    return [(e["kind"], e["arch"], e["name"]) for e in result["entries"]]


def test_auto_uses_cuobjdump_on_path(tmp_path, built, cuobjdump_dir):
    result = run_module(tmp_path, no_toolkit(tmp_path, path=str(built["both.so"])), path=cuobjdump_dir + ":" + SYSTEM_PATH)
    assert result["changed"] is False and not result.get("failed"), result
    assert result["method"] == "cuobjdump"
    assert result["cuobjdump"] == os.path.join(cuobjdump_dir, "cuobjdump")
    assert result["sass_archs"] == ["sm_121", "sm_80"] and result["ptx_archs"] == ["sm_80"]
    assert result["counts"] == {"sass": 4, "ptx": 1}
    assert brief(result)[2:4] == [("sass", "sm_121", "both.3.sm_121.cubin"), ("ptx", "sm_80", "both.1.sm_80.ptx")]
    assert result["kernels_complete"] is True
    assert result["kernels"] == [{"name": k, "sass": ["sm_121", "sm_80"], "ptx": ["sm_80"]} for k in KERNELS]
    assert result["summary"] == "native sm_121 (also sm_80 SASS + compute_80 PTX)"
    assert result["problems"] == [] and result["notes"] == []


def test_auto_finds_cuobjdump_in_cuda_home(tmp_path, built, cuobjdump_dir):
    home = Path(cuobjdump_dir).parent  # <pkg>/nvidia/cu13, which holds bin/cuobjdump like a toolkit
    result = run_module(tmp_path, {"path": str(built["sm121.so"]), "cuda_home": str(home)})
    assert result["method"] == "cuobjdump" and result["cuobjdump"] == str(home / "bin" / "cuobjdump")


def test_auto_falls_back_to_python_and_says_so(tmp_path, built):
    result = run_module(tmp_path, no_toolkit(tmp_path, path=str(built["both.so"])))
    assert result["method"] == "python" and result["cuobjdump"] is None
    assert result["notes"][0] == "cuobjdump not found on PATH or in %s/no-cuda/bin: used the built-in reader" % tmp_path
    # without a Zstandard module the PTX kernel names stay unread, and the result says so
    assert result["kernels_complete"] is False
    assert any("zstd-compressed" in note for note in result["notes"])
    assert result["section"] == ".nv_fatbin" and result["elf_machine"] == "x86_64"


@pytest.mark.parametrize("name", ["sm121.so", "sm80_ptx.so", "both.so", "_vllm_fa2_C.abi3.so", "mixed.so", "rdc.o",
                                  "aarch64.o"])
def test_both_methods_return_the_same(tmp_path, built, cuobjdump_dir, name):
    """The module's answer does not depend on whether cuobjdump is installed (given a Zstandard module)."""
    via_tool = run_module(tmp_path, {"path": str(built[name]), "method": "cuobjdump",
                                     "cuobjdump": os.path.join(cuobjdump_dir, "cuobjdump"), "target_archs": "12.1"})
    via_python = run_module(tmp_path, {"path": str(built[name]), "method": "python", "target_archs": "12.1"},
                            pythonpath=[lib.zstandard_dir()])
    assert (via_tool["method"], via_python["method"]) == ("cuobjdump", "python")
    for key in ("sass_archs", "ptx_archs", "counts", "kernels", "kernels_complete", "summary", "problems"):
        assert via_tool[key] == via_python[key], key
    assert brief(via_tool) == brief(via_python)
    assert [e["kernels"] for e in via_tool["entries"]] == [e["kernels"] for e in via_python["entries"]]


STOCK_VS_BUILT = [
    # (library, target_archs, allow_ptx, summary, problems)
    ("_vllm_fa2_C.abi3.so", "12.1a", False, "PTX-only for sm_121 (sm_80 SASS + compute_80 PTX; the driver JIT-compiles)",
     ["no SASS for sm_121 (target 12.1a); SASS present: sm_80",
      "PTX present (sm_80) but PTX was not asked for: the driver would JIT-compile it"]),
    ("sm121.so", "12.1a", False, "native sm_121", []),
    ("both.so", ["8.0", "12.1"], True,
     "native sm_80 (also sm_121 SASS + compute_80 PTX); native sm_121 (also sm_80 SASS + compute_80 PTX)", []),
    ("both.so", "12.1", False, "native sm_121 (also sm_80 SASS + compute_80 PTX)",
     ["PTX present (sm_80) but PTX was not asked for: the driver would JIT-compile it"]),
    ("mixed.so", "12.1", False, "partly native sm_121 (1 of 4 kernels lack it; sm_75, sm_80 SASS)",
     ["1 of 4 kernels have no SASS for sm_121: _Z11late_kernelPd"]),
]


@pytest.mark.parametrize("name, targets, allow_ptx, summary, problems", STOCK_VS_BUILT)
def test_targets_summary_and_problems(tmp_path, built, cuobjdump_dir, name, targets, allow_ptx, summary, problems):
    result = run_module(tmp_path, {"path": str(built[name]), "target_archs": targets, "allow_ptx": allow_ptx,
                                   "cuobjdump": os.path.join(cuobjdump_dir, "cuobjdump")})
    assert not result.get("failed"), result
    assert result["summary"] == summary
    assert result["problems"] == problems


def test_stock_summary_without_targets_names_sm12x(tmp_path, built):
    result = run_module(tmp_path, no_toolkit(tmp_path, path=str(built["_vllm_fa2_C.abi3.so"])))
    assert result["summary"] == "PTX-only for SM12x (sm_80 SASS + compute_80 PTX; the driver JIT-compiles)"
    assert result["problems"] == []


def test_kernels_off(tmp_path, built, cuobjdump_dir):
    for args in ({"method": "python"}, {"cuobjdump": os.path.join(cuobjdump_dir, "cuobjdump")}):
        result = run_module(tmp_path, dict(args, path=str(built["both.so"]), kernels=False))
        assert result["kernels"] == [] and result["kernels_complete"] is False
        assert all(e["kernels"] is None for e in result["entries"])
        assert result["counts"] == {"sass": 4, "ptx": 1}


def test_check_mode_reads_and_changes_nothing(tmp_path, built, cuobjdump_dir):
    before = built["both.so"].stat().st_mtime_ns
    result = run_module(tmp_path, {"path": str(built["both.so"]), "_ansible_check_mode": True},
                        path=cuobjdump_dir + ":" + SYSTEM_PATH)
    assert result["changed"] is False and result["counts"] == {"sass": 4, "ptx": 1}
    assert built["both.so"].stat().st_mtime_ns == before


FAILURES = [
    # (label, file maker, args, expected text in msg); {path} and {tmp} are filled in
    ("missing path", None, {"path": "{tmp}/nope.so"}, "path={tmp}/nope.so does not exist"),
    ("directory", None, {"path": "{tmp}"}, "path={tmp} is not a regular file"),
    ("text file, python", "text", {"method": "python"}, "{path} is not an ELF file (it starts with b'not an E')"),
    ("text file, cuobjdump", "text", {"method": "cuobjdump"},
     "--list-elf --list-ptx {path} failed (rc=255): cuobjdump info : File '{path}' does not contain device code"),
    ("ELF without fatbin, python", "no_cuda.so", {"method": "python"},
     "{path} (ELF x86_64) has no .nv_fatbin or __nv_relfatbin section: it holds no CUDA device code"),
    ("ELF without fatbin, cuobjdump", "no_cuda.so", {},
     "failed (rc=255): cuobjdump info : File '{path}' does not contain device code"),
    ("empty file, cuobjdump", "empty", {}, "failed (rc=1): cuobjdump fatal : Invalid fatbin header in '{path}'"),
    ("bad target", "both.so", {"target_archs": ["12.1", "twelve"]},
     "target_archs: target arch 'twelve' is not of the form 12.1, 12.1a, 8.0+PTX or sm_121"),
    ("bad method", "both.so", {"method": "objdump"}, "value of method must be one of: auto, cuobjdump, python"),
]


@pytest.mark.parametrize("label, maker, args, message", FAILURES, ids=[row[0] for row in FAILURES])
def test_failures_name_the_path_and_the_cause(tmp_path, built, cuobjdump_dir, label, maker, args, message):
    target = None
    if maker == "text":
        target = tmp_path / "notes.txt"
        target.write_text("not an ELF file\n")
    elif maker == "empty":
        target = tmp_path / "empty.so"
        target.write_bytes(b"")
    elif maker:
        target = built[maker]
    call = {k: (v.format(tmp=tmp_path) if isinstance(v, str) else v) for k, v in args.items()}
    if target is not None:
        call["path"] = str(target)
    if call.get("method") != "python":
        call.setdefault("cuobjdump", os.path.join(cuobjdump_dir, "cuobjdump"))
    result = run_module(tmp_path, call)
    assert result.get("failed") is True, result
    assert message.format(tmp=tmp_path, path=target) in result["msg"]


def test_method_cuobjdump_without_one(tmp_path, built):
    result = run_module(tmp_path, no_toolkit(tmp_path, path=str(built["both.so"]), method="cuobjdump"))
    assert result["failed"] is True
    assert result["msg"] == ("method=cuobjdump but cuobjdump not found on PATH or in %s/no-cuda/bin; "
                             "set the cuobjdump option or use method=python" % tmp_path)


def test_cuobjdump_option_must_be_executable(tmp_path, built):
    fake = tmp_path / "cuobjdump"
    fake.write_text("not a program\n")
    result = run_module(tmp_path, {"path": str(built["both.so"]), "cuobjdump": str(fake)})
    assert result["failed"] is True and result["msg"] == "cuobjdump=%s is not an executable file" % fake


def test_ansible_doc_renders(tmp_path):
    proc = subprocess.run([ansible_doc(), "-t", "module", "dgxspark.vllm.cuda_fatbin_info"],
                          capture_output=True, text=True, check=False,
                          env={"ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS), "PATH": os.environ.get("PATH", SYSTEM_PATH),
                               "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    for text in ("target_archs", "kernels_complete", "nvidia-cuda-cuobjdump", "PTX-only for SM12x"):
        assert text in proc.stdout, text
    assert "WARNING" not in proc.stderr, proc.stderr
