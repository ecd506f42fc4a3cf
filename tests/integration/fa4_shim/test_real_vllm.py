"""The shim and vllm_verify against the real vLLM code of several releases, on the CPU.

The releases are realvllm.DEFAULT_RELEASES (0.24.0 and 0.28.0 with the 4-parameter get_flash_attn_version,
0.33.0 with the 7-parameter one); DGX_FA4_RELEASES="all" runs every release from 0.24.0 to 0.33.0 (0.27.x
has a fifth parameter, requires_local_attention). The wheels
come from PyPI and are installed --no-deps into cached venvs (realvllm.py); each test works in a throw-away
overlay venv that holds the shim exactly as the role installs it (files + rendered .pth), the seed-style
stand-in shim, or no shim at all: what "vLLM alone" answers is measured, not assumed.
Stand-ins, because there is no GPU and no Hugging Face here, each named where it is made:
the platform's capability (real_check.py), the empty _vllm_fa2_C module after the real one failed to
load for lack of libcuda, vllm.config where vLLM's dependencies are absent, FLASH_ATTENTION_ARCH for the
arch vLLM's own FA4 code reads from torch.cuda, and the SM120 kernel directory (standin_kernel/, which
records calls instead of computing attention).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import realvllm
from conftest import run_check

ROOT = Path(__file__).resolve().parents[3]
COLLECTIONS = ROOT / ".cache" / "collections"
MODULE = ROOT / "plugins" / "modules" / "vllm_verify.py"
VERSIONS = list(realvllm.RELEASES)
FOUR = ["requires_alibi", "head_size", "head_size_v", "has_sinks"]
SEVEN = FOUR + ["requires_softcap", "kv_cache_block_size", "supports_fa4_hd256"]
FIVE = FOUR + ["requires_local_attention"]  # vLLM 0.27.x only
SHIM_NAMES = {
    "get_flash_attn_version": "dgxspark_fa4_sm120_shim._patch_fa_utils.<locals>.get_flash_attn_version",
    "_is_fa4_supported": "dgxspark_fa4_sm120_shim._patch_fa_iface.<locals>._is_fa4_supported",
    "_flash_attn_fwd": "dgxspark_fa4_sm120_shim._patch_cute_iface.<locals>._dispatch",
}
CAPABILITIES = ["12.1", "12.0", "9.0", "none"]
# vLLM's own answer without a head size: FA2 on 12.x and (with no FA3 library loadable on this CPU host) on 9.0,
# None without a GPU.
ANSWER_WITHOUT_HEAD_SIZE = {"12.1": 2, "12.0": 2, "9.0": 2, "none": None}


def signature(version):
    release = tuple(int(p) for p in version.split("."))
    return SEVEN if release >= (0, 29, 0) else FIVE if release[:2] == (0, 27) else FOUR


# Every call of get_flash_attn_version without a head size in each release's sources (found by real_check.py),
# by the function or class body it sits in, and what vLLM decides there from the answer: all of it is about
# the whole model (or the whole backend), never one layer.
WHOLE_MODEL_CALLERS = {
    "v1/attention/backends/fa_utils.py:flash_attn_supports_sinks": "sinks supported when the answer is 3 or 4",
    "v1/attention/backends/flash_attn.py:FlashAttentionBackend.supports_per_head_quant_scales":
        "per-head quant scales when the answer is 3 or more",
    "v1/attention/backends/flash_attn.py:FlashAttentionBackend.supports_kv_cache_dtype":
        "FP8 KV cache when the answer is 3 (on 9.x)",
    "v1/attention/backends/flash_attn.py:FlashAttentionMetadataBuilder":
        "class body: CUDA-graph support ALWAYS when the answer is 3 or 4, else UNIFORM_BATCH",
    "v1/attention/backends/flash_attn.py:FlashAttentionMetadataBuilder.__init__":
        "AOT scheduling (FA3 scheduler metadata) when the answer is 3",
    "v1/attention/backends/mla/flashattn_mla.py:FlashAttnMLAMetadataBuilder.__init__":
        "MLA AOT scheduling when the answer is 3",
    "v1/attention/backends/mla/prefill/flash_attn.py:FlashAttnPrefillBackend.supports_mla_dimensions":
        "which MLA dimensions the FA prefill backend accepts (fewer when the answer is 4)",
    "model_executor/layers/attention/sparse_mla_attention.py:_is_masked_mha_available":
        "masked MHA for sparse MLA (qk 256 / v 256) when the answer is 4 (only on 10.x)",
}
_COMMON = {"v1/attention/backends/fa_utils.py:flash_attn_supports_sinks",
           "v1/attention/backends/flash_attn.py:FlashAttentionBackend.supports_per_head_quant_scales",
           "v1/attention/backends/flash_attn.py:FlashAttentionMetadataBuilder",
           "v1/attention/backends/flash_attn.py:FlashAttentionMetadataBuilder.__init__",
           "v1/attention/backends/mla/flashattn_mla.py:FlashAttnMLAMetadataBuilder.__init__"}
_KV_DTYPE = {"v1/attention/backends/flash_attn.py:FlashAttentionBackend.supports_kv_cache_dtype"}
_MLA_DIMS = {"v1/attention/backends/mla/prefill/flash_attn.py:FlashAttnPrefillBackend.supports_mla_dimensions"}
_SPARSE = {"model_executor/layers/attention/sparse_mla_attention.py:_is_masked_mha_available"}
EXPECTED_WHOLE_MODEL_CALLERS = {
    "0.24.0": _COMMON | _KV_DTYPE, "0.25.0": _COMMON | _KV_DTYPE, "0.25.1": _COMMON | _KV_DTYPE,
    "0.26.0": _COMMON | _KV_DTYPE | _MLA_DIMS, "0.27.0": _COMMON, "0.27.1": _COMMON, "0.28.0": _COMMON,
    "0.29.0": _COMMON | _SPARSE, "0.30.0": _COMMON | _SPARSE, "0.31.0": _COMMON | _SPARSE,
    "0.32.0": _COMMON | _SPARSE, "0.33.0": _COMMON | _SPARSE,
}

_results = {}


@pytest.fixture
def result(overlay):
    """real_check.py's result for (version, shim), once per pair (a run takes seconds)."""
    def get(version, shim="dgxspark"):
        key = (version, shim)
        if key not in _results:
            venv, _site = overlay(version, shim=shim)
            _results[key] = run_check(venv)
        return _results[key]
    return get


def _rows(data):
    return {(row["where"], json.dumps(row["kwargs"], sort_keys=True)): row["answer"] for row in data["callers"]}


@pytest.mark.parametrize("version", VERSIONS)
def test_the_three_names_are_patched(result, version):
    data = result(version)
    assert data["vllm_version"] == version
    assert data["signature"] == signature(version)
    assert data["qualnames"] == SHIM_NAMES
    assert "vllm.vllm_flash_attn._vllm_fa2_C" in data["stand_ins"] and "libcuda.so" in data["fa2_real_load"]


@pytest.mark.parametrize("version", VERSIONS)
def test_no_real_caller_keyword_set_raises(result, version):
    data = result(version)
    used = {k for keys in data["caller_keyword_sets"] for k in keys}
    # the replay covers every parameter the release's callers use, including 0.29+'s new ones
    assert used == set(signature(version)), (used, data["caller_keyword_sets"])
    rows = [row for cap in data["by_capability"].values() for row in cap["callers"]]
    assert len(rows) >= 4 * len(data["sites"])
    bad = [row for row in rows if isinstance(row["answer"], str)]
    assert not bad, bad[:3]
    for label, by_cap in data["by_capability"].items():
        assert not isinstance(by_cap["every_parameter_hd128"], str), (label, by_cap["every_parameter_hd128"])


@pytest.mark.parametrize("version", VERSIONS)
def test_the_head_size_less_callers_are_the_known_whole_model_questions(result, version):
    """A release with a new caller without a head size fails here: decide what it asks before trusting the shim."""
    found = {site["in"] for site in result(version)["sites"] if site["head_size_less"]}
    assert found == EXPECTED_WHOLE_MODEL_CALLERS[version]
    assert found <= set(WHOLE_MODEL_CALLERS)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("label", CAPABILITIES)
def test_head_size_less_callers_get_vllms_own_answer(result, version, label):
    """Each caller without a head size, called as vLLM calls it: the shim's answer is vLLM's own, on every GPU."""
    shim, alone = result(version)["by_capability"][label], result(version, None)["by_capability"][label]
    sites = {s["where"]: s for s in result(version)["sites"] if s["head_size_less"]}
    assert sites
    shim_rows, alone_rows = _rows(shim), _rows(alone)
    for key, answer in shim_rows.items():
        if key[0] in sites:
            assert answer == alone_rows[key] == ANSWER_WITHOUT_HEAD_SIZE[label], (sites[key[0]]["in"], answer, alone_rows[key])
    # the same for every other parameter set but the head sizes (flash_attn_supports_kv_cache_dtype's call shape)
    assert shim["no_head_size_every_other_parameter"] == alone["no_head_size_every_other_parameter"] \
        == ANSWER_WITHOUT_HEAD_SIZE[label]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("label", CAPABILITIES)
def test_vllms_whole_model_functions_answer_as_without_the_shim(result, version, label):
    """vLLM's own functions that answer for the whole model (sinks, FA4 support, MLA, FP8 KV cache)."""
    shim, alone = result(version)["by_capability"][label], result(version, None)["by_capability"][label]
    assert shim["whole_model"] == alone["whole_model"]
    if label.startswith("12."):
        assert shim["whole_model"]["flash_attn_supports_sinks()"] is False
        assert shim["whole_model"]["is_fa_version_supported(4)"] is False
        assert shim["whole_model"]["_is_fa4_supported()"][0] is False


@pytest.mark.parametrize("version", VERSIONS)
def test_the_seed_style_shim_answers_fa4_for_the_whole_model(result, version):
    """The negative control: the seed-style wrapper answers 4 without a head size, and claims sinks on 12.1."""
    seed = result(version, "seed")["by_capability"]["12.1"]
    sites = {s["where"] for s in result(version, "seed")["sites"] if s["head_size_less"]}
    assert {answer for (where, _call), answer in _rows(seed).items() if where in sites} == {4}
    assert seed["whole_model"]["flash_attn_supports_sinks()"] is True


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("label", ["12.1", "12.0"])
def test_sm12x_layers_get_fa4_for_128_and_fa2_for_256(result, version, label):
    data, alone = result(version)["by_capability"][label], result(version, None)["by_capability"][label]
    assert (data["hd128"], data["hd256"], data["alibi"], data["every_parameter_hd128"]) == (4, 2, 2, 4)
    assert (alone["hd128"], alone["hd256"]) == (2, 2), "vLLM alone picks FA2 on 12.x"
    sites = {s["where"]: s for s in result(version)["sites"]}
    for row in data["callers"]:
        if not sites[row["where"]]["head_size_less"]:
            assert row["answer"] == (4 if row["kwargs"]["head_size"] <= 128 else 2), row


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("label", ["9.0", "none"])
def test_other_gpus_and_no_gpu_are_untouched(result, version, label):
    data, alone = result(version)["by_capability"][label], result(version, None)["by_capability"][label]
    assert _rows(data) == _rows(alone)
    assert (data["hd128"], data["hd256"]) == (alone["hd128"], alone["hd256"])
    if label == "9.0":
        assert data["whole_model"]["_is_fa4_supported()"] == [True, None], "vLLM's own answer on 9.x"
    else:
        assert data["hd128"] is None, "vLLM's own answer without a GPU"


@pytest.mark.parametrize("version", VERSIONS)
def test_vllms_fa4_branch_reaches_the_local_kernel(result, version):
    """vLLM's real flash_attn_varlen_func(fa_version=4) with paged KV and num_splits=0, on SM12x."""
    data = result(version)
    varlen = data["varlen"]
    assert varlen["calls"] == 1 and varlen["num_splits"] == 1 and varlen["page_table_is_block_table"]
    assert varlen["q_passed"] and varlen["causal"] is True and varlen["return_lse"] is True
    assert varlen["out"] == "standin-out" and varlen["lse"] == "standin-lse"
    status = data["shim_status"]
    assert status["kernel_loaded"] and status["errors"] == [] and status["warnings"] == []


@pytest.mark.parametrize("version", VERSIONS)
def test_ahead_of_time_compile_is_skipped_on_sm12x(result, version):
    """compile_flash_attn_varlen_func_from_specs(fa_version=4) at 12.1 (vLLM 0.25 and later): the shim returns
    None without calling the kernel, which compiles on first use; vLLM alone raises."""
    data, alone = result(version), result(version, None)
    if "compile_only" not in alone:
        assert tuple(int(p) for p in version.split(".")) < (0, 25, 0), "the entry point exists from 0.25"
        return
    assert data["compile_only"] == {"returned": "None", "kernel_calls": 0}
    assert "raised" in alone["compile_only"]
    if tuple(int(p) for p in version.split(".")) >= (0, 30, 0):
        # from 0.30 vLLM's FA4 code takes the arch from FLASH_ATTENTION_ARCH before it asks torch.cuda anything,
        # so on this CPU host it reaches its SM120 check (0.25-0.29 stop at "Torch not compiled with CUDA enabled")
        assert alone["compile_only"]["raised"] == "AssertionError: SM120 forward only supports num_splits=1"


@pytest.mark.parametrize("version", VERSIONS)
def test_kill_switch_gives_vllms_own_result(overlay, version):
    venv, _site = overlay(version, shim="dgxspark")
    data = run_check(venv, {"FA4_SM120_SHIM": "0"})
    assert data["qualnames"] == {
        "get_flash_attn_version": "vllm.v1.attention.backends.fa_utils.get_flash_attn_version",
        "_is_fa4_supported": "vllm.vllm_flash_attn.flash_attn_interface._is_fa4_supported",
        "_flash_attn_fwd": "vllm.vllm_flash_attn.cute.interface._flash_attn_fwd",
    }
    sm12x = data["by_capability"]["12.1"]
    assert (sm12x["hd128"], sm12x["hd256"]) == (2, 2)
    assert sm12x["whole_model"]["_is_fa4_supported()"][0] is False


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
    assert report["shim"]["ours"] is True and report["other_fa4_hooks"] == []
    assert report["installed_signature"] == SEVEN
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
    assert report["installed_signature"] == signature(version)
    assert (report["fa_version_hd128"], report["fa_version_hd256"]) == (4, 2)
    assert report["fa_version_no_head_size"] == report["fa_version_no_head_size_vllm"] == 2
    assert report["is_fa4_supported"] == report["is_fa4_supported_vllm"] and report["fa4_available"] is True
    assert report["flash_attn_fwd_qualname"] == "_patch_cute_iface.<locals>._dispatch"
    assert report["shim"]["ours"] is True and report["shim"]["kernel_loaded"] is True
    assert set(report["vllm_own_from"]) == {"_is_fa4_supported", "get_flash_attn_version"}
    assert all(v.startswith("fresh copy of ") for v in report["vllm_own_from"].values()), report["vllm_own_from"]
    whole = [c for c in result["checks"] if c["check"].endswith("gives vLLM's own answer")]
    assert len(whole) == len(EXPECTED_WHOLE_MODEL_CALLERS[version]) and all(c["ok"] and c["seen"] == 2 for c in whole), whole
    assert any("assume_capability" in s for s in report["stand_ins"])


def test_vllm_verify_fails_the_seed_style_shim_on_0_24_at_12_1(tmp_path, overlay):
    """The seed's fixed 4-parameter wrapper fits 0.24's signature, so nothing raises; its dispatch has the same
    qualname as ours and loads no kernel. vllm_verify must still fail it: the shim is not this collection's."""
    venv, _site = overlay("0.24.0", shim="seed")
    result = run_verify(tmp_path, venv, assume_capability="12.1")
    assert result.get("failed") is True and result["passed"] is False, result
    report = result["report"]
    assert (report["fa_version_hd128"], report["fa_version_hd256"]) == (4, 2), "the recipe's own checks hold"
    assert report["flash_attn_fwd_qualname"] == "_patch_cute_iface.<locals>._dispatch"
    assert report["shim"]["loaded"] is False and report["shim"]["kernel_loaded"] is None
    problems = result["problems"]
    assert "SM120 kernel loaded: expected True, got None" in problems
    assert "the loaded shim is dgxspark.vllm's (dgxspark_fa4_sm120_shim): expected True, got False" in problems
    assert "no other FA4 import hook: expected [], got ['fa4_sm120_shim._PatchingFinder']" in problems
    assert "get_flash_attn_version without a head size is vLLM's own: expected 2, got 4" in problems
    assert not any("TypeError" in p for p in problems)


def test_vllm_verify_fails_the_seed_style_shim_on_0_33(tmp_path, overlay):
    """The recipe's fixed 4-parameter wrapper on 0.33.0: fails even without a GPU (the wrapper raises first)."""
    venv, _site = overlay("0.33.0", shim="seed")
    result = run_verify(tmp_path, venv)
    assert result.get("failed") is True and result["passed"] is False, result
    assert any("TypeError" in p and "requires_softcap" in p for p in result["problems"]), result["problems"]
    assert "does not match the expectations" in result["msg"]
    checks = {c["check"]: c for c in result["checks"]}
    assert checks["_flash_attn_fwd qualname"]["ok"], "the recipe's own qualname check holds"
    assert not checks["the loaded shim is dgxspark.vllm's (dgxspark_fa4_sm120_shim)"]["ok"]
