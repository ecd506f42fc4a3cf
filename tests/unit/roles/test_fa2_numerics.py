"""The fa2_native numerics harness (roles/fa2_native/files/fa2_numerics.py), run for real on CPU torch.

There is no GPU and no FA2 library in CI, so:
  * the self-test runs on CPU: torch's scaled_dot_product_attention must pass every case, and the
    deliberately wrong functions (keys shifted by one; one NaN) must fail every case;
  * the operator path is exercised with a stand-in operator registered as _vllm_fa2_C::varlen_fwd
    with FA2's own schema and a CPU body (correct, then wrong), so the harness's argument filling
    from the schema is tested against the real signature.
The GPU run on the real library is tests/gpu/fa2_numerics.py (the lead runs it once; see the report).
torch 2.13.0 (CPU) comes from pip into .cache/venvs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import fa2_support  # noqa: E402

HARNESS = fa2_support.ROOT / "roles" / "fa2_native" / "files" / "fa2_numerics.py"

# flash-attention's registration of varlen_fwd (csrc/flash_attn/flash_api_torch_lib.cpp).
FA2_SCHEMA = ("varlen_fwd(Tensor! q, Tensor k, Tensor v, Tensor!? out, Tensor cu_seqlens_q, "
              "Tensor cu_seqlens_k, Tensor? seqused_k, Tensor? leftpad_k, Tensor? block_table, Tensor? alibi_slopes, "
              "int max_seqlen_q, int max_seqlen_k, float p_dropout, float softmax_scale, bool zero_tensors, "
              "bool is_causal, int window_size_left, int window_size_right, float softcap, bool return_softmax, "
              "int num_splits) -> Tensor[]")

DRIVER = r"""
import json, runpy, sys, torch
h = runpy.run_path(sys.argv[1])
mode = sys.argv[3]
lib = torch.library.Library("_vllm_fa2_C", "DEF")
lib.define(sys.argv[2])
good = h["sdpa_function"](torch)
seen = {}
def body(q, k, v, out, cu_q, cu_k, seqused_k, leftpad_k, block_table, alibi, max_q, max_k, p, scale, zero,
         causal, wl, wr, softcap, ret, num_splits):
    seen.update(window=(wl, wr), p=p, softcap=softcap, num_splits=num_splits, out_is_none=out is None)
    result = good(dict(q=q, k=k, v=v, cu_q=cu_q, cu_k=cu_k, max_q=max_q, max_k=max_k, scale=scale, causal=causal))
    if mode == "wrong":
        result = result * 0.5
    return [result]
lib.impl("varlen_fwd", body, "CPU")
function, label = h["op_function"](torch, None)
rows = h["evaluate"](torch, function, h["build_cases"](quick=True), "cpu")
print(json.dumps({"label": label, "passed": [r["passed"] for r in rows], "errors": [r["error"] for r in rows], "seen": seen}))
"""


@pytest.fixture(scope="module")
def torch_python():
    return fa2_support.cache_venv("fa2-torch-cpu", fa2_support.TORCH_CPU) / "bin" / "python"


def test_self_test_passes_known_good_and_catches_wrong_functions(torch_python):
    proc = subprocess.run([str(torch_python), str(HARNESS), "--self-test", "--device", "cpu", "--json"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    functions = summary["functions"]
    assert summary["cases"] == 12
    assert functions["known-good: torch scaled_dot_product_attention"]["passed_cases"] == 12
    assert functions["deliberately wrong: keys shifted by one"]["passed_cases"] == 0
    assert functions["deliberately wrong: one NaN in the output"]["passed_cases"] == 0
    assert "NaN/Inf in output" in proc.stdout
    assert "self-test PASSED on cpu" in proc.stdout


@pytest.mark.parametrize("mode, expect_pass", [("right", True), ("wrong", False)])
def test_operator_path_fills_fa2_schema(torch_python, tmp_path, mode, expect_pass):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    proc = subprocess.run([str(torch_python), str(driver), str(HARNESS), FA2_SCHEMA, mode],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["errors"] == [None] * len(result["errors"])
    assert all(result["passed"]) if expect_pass else not any(result["passed"])
    assert result["seen"] == {"window": [-1, -1], "p": 0.0, "softcap": 0.0, "num_splits": 0, "out_is_none": True}


def test_unloadable_library_exits_2_with_the_reason(torch_python, tmp_path):
    bogus = tmp_path / "_vllm_fa2_C.abi3.so"
    bogus.write_bytes(b"not an ELF file")
    proc = subprocess.run([str(torch_python), str(HARNESS), "--library", str(bogus), "--api", "op", "--device", "cpu",
                           "--json"], capture_output=True, text=True, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["passed"] is False and str(bogus) in summary["load_error"]


def test_a_vllm_that_does_not_import_falls_back_to_the_operator_path(torch_python, tmp_path):
    """vLLM's package is there but its import fails with something other than ImportError (a venv with vLLM's
    Python files and not all of its dependencies): the gate must try the library through torch.ops instead of
    reporting the vLLM import as a failed library. A STAND-IN vllm package raises RuntimeError on import."""
    site = tmp_path / "site"
    (site / "vllm" / "vllm_flash_attn").mkdir(parents=True)
    (site / "vllm" / "__init__.py").write_text("raise RuntimeError('stand-in vLLM: a dependency is missing')\n")
    (site / "vllm" / "vllm_flash_attn" / "__init__.py").write_text("")
    bogus = tmp_path / "_vllm_fa2_C.abi3.so"
    bogus.write_bytes(b"not an ELF file")
    proc = subprocess.run([str(torch_python), str(HARNESS), "--library", str(bogus), "--device", "cpu", "--json"],
                          capture_output=True, text=True, check=False, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "stand-in vLLM" not in summary["load_error"], "the vLLM import error is not the library's"
    assert str(bogus) in summary["load_error"], "torch.ops.load_library was tried on the library"


def test_no_cuda_device_exits_3(torch_python):
    proc = subprocess.run([str(torch_python), str(HARNESS), "--self-test"], capture_output=True, text=True, check=False)
    assert proc.returncode == 3 and "no CUDA device" in proc.stdout
