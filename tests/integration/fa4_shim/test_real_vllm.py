"""The shim and vllm_verify against the real vLLM code of two releases, on the CPU.

vLLM 0.28.0 has the 4-parameter get_flash_attn_version, 0.33.0 the 7-parameter one. The wheels come
from PyPI and are installed --no-deps into cached venvs (realvllm.py); each test works in a throw-away
overlay venv that holds the shim exactly as the role installs it (files + rendered .pth).
Stand-ins, because there is no GPU and no Hugging Face here, each named where it is made:
the platform's capability (real_check.py), the empty _vllm_fa2_C module after the real one failed to
load for lack of libcuda, vllm.config where vLLM's dependencies are absent, and the SM120 kernel
directory (standin_kernel/, which records calls instead of computing attention).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_check

ROOT = Path(__file__).resolve().parents[3]
COLLECTIONS = ROOT / ".cache" / "collections"
MODULE = ROOT / "plugins" / "modules" / "vllm_verify.py"
VERSIONS = ["0.28.0", "0.33.0"]
SIGNATURES = {
    "0.28.0": ["requires_alibi", "head_size", "head_size_v", "has_sinks"],
    "0.33.0": ["requires_alibi", "head_size", "head_size_v", "has_sinks", "requires_softcap", "kv_cache_block_size",
               "supports_fa4_hd256"],
}
SHIM_NAMES = {
    "get_flash_attn_version": "dgxspark_fa4_sm120_shim._patch_fa_utils.<locals>.get_flash_attn_version",
    "_is_fa4_supported": "dgxspark_fa4_sm120_shim._patch_fa_iface.<locals>._is_fa4_supported",
    "_flash_attn_fwd": "dgxspark_fa4_sm120_shim._patch_cute_iface.<locals>._dispatch",
}

_results = {}


@pytest.fixture
def shim_result(overlay):
    """real_check.py's result with the shim installed, once per release (the run takes seconds)."""
    def get(version):
        if version not in _results:
            venv, _site = overlay(version, shim="dgxspark")
            _results[version] = run_check(venv)
        return _results[version]
    return get


@pytest.mark.parametrize("version", VERSIONS)
def test_the_three_names_are_patched(shim_result, version):
    result = shim_result(version)
    assert result["vllm_version"] == version
    assert result["signature"] == SIGNATURES[version]
    assert result["qualnames"] == SHIM_NAMES
    assert "vllm.vllm_flash_attn._vllm_fa2_C" in result["stand_ins"] and "libcuda.so" in result["fa2_real_load"]


@pytest.mark.parametrize("version", VERSIONS)
def test_no_real_caller_keyword_set_raises(shim_result, version):
    result = shim_result(version)
    keyword_sets = result["caller_keyword_sets"]
    used = {k for keys in keyword_sets for k in keys}
    # the replay covers every parameter the release's callers use, including 0.29+'s new ones
    assert used == set(SIGNATURES[version]), (used, keyword_sets)
    rows = [row for cap in result["by_capability"].values() for row in cap["callers"]]
    assert len(rows) >= 3 * 4 * len(keyword_sets)
    bad = [row for row in rows if isinstance(row["shim"], str)]
    assert not bad, bad[:3]
    for label, data in result["by_capability"].items():
        assert not isinstance(data["every_parameter_hd128"], str), (label, data["every_parameter_hd128"])


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("label", ["12.1", "12.0"])
def test_sm12x_gets_fa4_for_128_and_fa2_for_256(shim_result, version, label):
    data = shim_result(version)["by_capability"][label]
    assert (data["hd128"], data["hd256"], data["alibi"], data["every_parameter_hd128"]) == (4, 2, 2, 4)
    assert data["is_fa4_supported"] == [True, None]
    assert data["is_fa4_supported_vllm"][0] is False, "vLLM itself refuses FA4 on 12.x"
    for row in data["callers"]:
        if "head_size" in row["kwargs"]:
            assert row["shim"] == (4 if row["kwargs"]["head_size"] <= 128 else 2), row
        # vLLM's own choice there is FA2
        assert row["vllm"] == 2, row


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("label", ["9.0", "none"])
def test_other_gpus_and_no_gpu_are_untouched(shim_result, version, label):
    data = shim_result(version)["by_capability"][label]
    for row in data["callers"]:
        assert row["shim"] == row["vllm"], row
    assert data["is_fa4_supported"] == data["is_fa4_supported_vllm"]
    assert (data["hd128"], data["hd256"]) == (data["hd128_vllm"], data["hd256_vllm"])
    if label == "9.0":
        assert data["is_fa4_supported"] == [True, None], "vLLM's own answer on 9.x"
    else:
        assert data["hd128"] is None, "vLLM's own answer without a GPU"


@pytest.mark.parametrize("version", VERSIONS)
def test_vllms_fa4_branch_reaches_the_local_kernel(shim_result, version):
    """vLLM's real flash_attn_varlen_func(fa_version=4) with paged KV and num_splits=0, on SM12x."""
    result = shim_result(version)
    varlen = result["varlen"]
    assert varlen["calls"] == 1 and varlen["num_splits"] == 1 and varlen["page_table_is_block_table"]
    assert varlen["q_passed"] and varlen["causal"] is True and varlen["return_lse"] is True
    assert varlen["out"] == "standin-out" and varlen["lse"] == "standin-lse"
    status = result["shim_status"]
    assert status["kernel_loaded"] and status["errors"] == [] and status["warnings"] == []


@pytest.mark.parametrize("version", VERSIONS)
def test_kill_switch_gives_vllms_own_result(overlay, version):
    venv, _site = overlay(version, shim="dgxspark")
    result = run_check(venv, {"FA4_SM120_SHIM": "0"})
    assert result["qualnames"] == {
        "get_flash_attn_version": "vllm.v1.attention.backends.fa_utils.get_flash_attn_version",
        "_is_fa4_supported": "vllm.vllm_flash_attn.flash_attn_interface._is_fa4_supported",
        "_flash_attn_fwd": "vllm.vllm_flash_attn.cute.interface._flash_attn_fwd",
    }
    sm12x = result["by_capability"]["12.1"]
    assert (sm12x["hd128"], sm12x["hd256"]) == (2, 2)
    assert sm12x["is_fa4_supported"][0] is False


def run_verify(tmp_path, venv, **options):
    args = {"venv_path": str(venv)}
    args.update(options)
    argsfile = tmp_path / "args.json"
    argsfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(COLLECTIONS), "HOME": os.environ.get("HOME", "/root")}
    proc = subprocess.run([sys.executable, str(MODULE), str(argsfile)], capture_output=True, text=True, env=env, check=False)
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_vllm_verify_passes_without_gpu_on_0_33(tmp_path, overlay):
    venv, _site = overlay("0.33.0", shim="dgxspark")
    result = run_verify(tmp_path, venv)
    assert result["passed"] is True, result.get("msg")
    report = result["report"]
    assert report["mode"] == "no-gpu" and report["vllm_version"] == "0.33.0" and report["hook_installed"]
    assert report["installed_signature"] == SIGNATURES["0.33.0"]
    assert report["flash_attn_fwd_qualname"] == "_patch_cute_iface.<locals>._dispatch"
    assert report["fa2_extension"] == "stand-in" and any("libcuda.so" in s for s in report["stand_ins"])
    assert report["fa_version_hd128"] is None, "nothing to judge there without a GPU"
    # the wheel's FA2 library, read by the fatbin module_utils: sm_80 SASS and PTX only (FACTS.md 2)
    lib = report["fa2_library"]
    assert (lib["available"], lib["sass_archs"], lib["ptx_archs"], lib["native"]) == (True, ["sm_80"], ["sm_80"], False)
    callers = [c for c in result["checks"] if c["check"].startswith("get_flash_attn_version as called at")]
    assert len(callers) >= 8 and all(c["ok"] for c in callers)


@pytest.mark.parametrize("version", VERSIONS)
def test_vllm_verify_passes_with_assumed_sm12x(tmp_path, overlay, version):
    venv, _site = overlay(version, shim="dgxspark")
    result = run_verify(tmp_path, venv, assume_capability="12.1")
    assert result["passed"] is True, result.get("msg")
    report = result["report"]
    assert report["mode"] == "sm12x" and report["vllm_version"] == version
    assert report["installed_signature"] == SIGNATURES[version]
    assert (report["fa_version_hd128"], report["fa_version_hd256"]) == (4, 2)
    assert report["is_fa4_supported"] == [True, None] and report["fa4_available"] is True
    assert report["flash_attn_fwd_qualname"] == "_patch_cute_iface.<locals>._dispatch"
    assert report["shim"]["kernel_loaded"] is True
    assert any("assume_capability" in s for s in report["stand_ins"])


def test_vllm_verify_fails_the_seed_style_shim_on_0_33(tmp_path, overlay):
    """The recipe's fixed 4-parameter wrapper on 0.33.0: fails even without a GPU (the wrapper raises first)."""
    venv, _site = overlay("0.33.0", shim="seed")
    result = run_verify(tmp_path, venv)
    assert result.get("failed") is True and result["passed"] is False, result
    assert any("TypeError" in p and "requires_softcap" in p for p in result["problems"]), result["problems"]
    assert "does not match the expectations" in result["msg"]
    checks = {c["check"]: c for c in result["checks"]}
    assert checks["hook installed"]["ok"] and checks["_flash_attn_fwd qualname"]["ok"], \
        "the recipe's own checks hold; only the pass-through fails"
    failing = [c for c in result["checks"] if not c["ok"]]
    assert failing and all(c["check"].startswith("get_flash_attn_version") for c in failing), failing
