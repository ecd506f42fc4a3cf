"""Unit tests of the FA4 SM120 shim against stand-in vllm packages (standin_vllm.py).

The stand-ins are not vLLM: they carry only the patched names, in both get_flash_attn_version
signature shapes (4 parameters: vLLM 0.24-0.28; 7 parameters: 0.29+) and a made-up 8th keyword.
The kernel directory is the stand-in under tests/integration/fa4_shim/standin_kernel.
Each case runs in a fresh interpreter whose site dir holds the shim and the .pth file rendered
from the role's template, so the shim loads exactly as in a venv. The real vLLM code is
exercised in tests/integration/fa4_shim/test_real_vllm.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import standin_vllm  # noqa: E402
from standin_vllm import SHIM, STANDIN_KERNEL  # noqa: E402

sys.path.insert(0, str(SHIM.parent))
import dgxspark_fa4_sm120_shim as shim  # noqa: E402  (imported only for its pure helpers; install() is never called here)


@pytest.fixture
def site(tmp_path):
    """Build a site dir with the shim, the rendered .pth and a stand-in vllm; return a runner."""

    def make(shape="seven", kernel_dir=STANDIN_KERNEL, with_shim=True):
        sitedir = tmp_path / "site"
        standin_vllm.write_vllm(sitedir, shape)
        if with_shim:
            standin_vllm.install_shim(sitedir, kernel_dir)
        return sitedir

    return make


def run(sitedir, body, capability="12.1", extra_env=None):
    """Run body in a fresh interpreter with sitedir processed as a site dir; return (json result, stderr)."""
    prelude = textwrap.dedent("""
        import json, site, sys
        site.addsitedir(%r)
        def qual(f):
            return "%%s.%%s" %% (f.__module__, f.__qualname__)
        R = {}
    """ % str(sitedir))
    code = prelude + textwrap.dedent(body) + "\nprint('RESULT=' + json.dumps(R, default=repr))\n"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "STANDIN_CAPABILITY": capability, "PYTHONNOUSERSITE": "1"}
    env.update(extra_env or {})
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = [item for item in proc.stdout.splitlines() if item.startswith("RESULT=")][-1]
    return json.loads(line[len("RESULT="):]), proc.stderr


CALLS_SM12X = """
    import vllm.v1.attention.backends.flash_attn as caller   # binds get_flash_attn_version at import
    import vllm.v1.attention.backends.fa_utils as fa_utils
    import vllm.vllm_flash_attn.flash_attn_interface as fai
    import vllm.vllm_flash_attn.cute.interface as cute
    import dgxspark_fa4_sm120_shim as shim
    R["qual_version"] = qual(fa_utils.get_flash_attn_version)
    R["qual_caller"] = qual(caller.get_flash_attn_version)
    R["qual_supported"] = qual(fai._is_fa4_supported)
    R["qual_fwd"] = qual(cute._flash_attn_fwd)
    R["hd128"] = caller.select(head_size=128)
    R["hd256"] = caller.select(head_size=256)
    R["hd64_v256"] = caller.select(head_size=64, head_size_v=256)
    R["alibi"] = caller.select(requires_alibi=True, head_size=64)
    R["no_args"] = caller.select()
    R["positional"] = fa_utils.get_flash_attn_version(False, 128)
    R["supported"] = fai._is_fa4_supported()
    R["varlen"] = fai.flash_attn_varlen_func("Q", "K", "V", block_table="BT", num_splits=0, fa_version=4,
                                           return_softmax_lse=True)
    import dgxspark_fa4_sm120_kernel.interface as kernel
    R["kernel_calls"] = [{"num_splits": c["num_splits"], "page_table": c["page_table"], "return_lse": c["return_lse"]}
                         for c in kernel.CALLS]
    R["status"] = shim.status()
"""


@pytest.mark.parametrize("shape", ["four", "seven"])
def test_sm12x_routes_fa4_through_the_local_kernel(site, shape):
    result, stderr = run(site(shape), CALLS_SM12X)
    assert result["qual_version"] == "dgxspark_fa4_sm120_shim._patch_fa_utils.<locals>.get_flash_attn_version"
    assert result["qual_caller"] == result["qual_version"], "a module that imported the name early must see the patch"
    assert result["qual_supported"] == "dgxspark_fa4_sm120_shim._patch_fa_iface.<locals>._is_fa4_supported"
    assert result["qual_fwd"] == "dgxspark_fa4_sm120_shim._patch_cute_iface.<locals>._dispatch"
    assert (result["hd128"], result["hd256"], result["hd64_v256"], result["alibi"]) == (4, 2, 2, 2)
    assert result["no_args"] == 4 and result["positional"] == 4
    assert result["supported"] == [True, None]
    # vLLM's FA4 branch unpacks four values; the kernel returned two; num_splits 0 became 1; paged KV went through.
    assert result["varlen"] == [["standin-out", "Q"], "standin-lse"]
    assert result["kernel_calls"] == [{"num_splits": 1, "page_table": "BT", "return_lse": True}]
    status = result["status"]
    assert status["kernel_loaded"] and status["kernel_error"] is None and status["finder_installed"]
    assert status["revision"] == "standin" and status["package_dir"].endswith("standin_kernel/build/torch-cuda")
    assert status["warnings"] == [] and status["errors"] == []
    assert "Traceback" not in stderr


def test_seven_parameter_callers_keywords_pass_through(site):
    result, _stderr = run(site("seven"), """
        import vllm.v1.attention.backends.flash_attn as caller
        all7 = dict(requires_alibi=False, head_size=128, head_size_v=128, has_sinks=False, requires_softcap=False,
                    kv_cache_block_size=16, supports_fa4_hd256=False)
        R["all7"] = caller.select(**all7)
        R["all7_256"] = caller.select(**dict(all7, head_size=256, head_size_v=256, supports_fa4_hd256=True))
        try:
            caller.select(head_size=128, not_a_parameter=1)
        except TypeError as exc:
            R["bad_keyword"] = str(exc)
    """)
    assert result["all7"] == 4 and result["all7_256"] == 2
    # A keyword the installed signature does not have still fails, with vLLM's own TypeError.
    assert "not_a_parameter" in result["bad_keyword"]


@pytest.mark.parametrize("capability,expected", [("12.1", 4), ("9.0", 3)])
def test_a_future_keyword_passes_through(site, capability, expected):
    result, _stderr = run(site("eight"), """
        import vllm.v1.attention.backends.fa_utils as fa_utils
        R["v"] = fa_utils.get_flash_attn_version(head_size=128, future_flag=True, kv_cache_block_size=16)
    """, capability=capability)
    assert result["v"] == expected


GRID = """
    import itertools
    import vllm.v1.attention.backends.fa_utils as fa_utils
    import vllm.vllm_flash_attn.flash_attn_interface as fai
    import vllm.vllm_flash_attn.cute.interface as cute
    import dgxspark_fa4_sm120_shim as shim
    patched, original = fa_utils.get_flash_attn_version, fa_utils.get_flash_attn_version.__wrapped__
    cases = [dict(requires_alibi=a, head_size=h, head_size_v=hv) for a, h, hv in
             itertools.product([False, True], [None, 64, 128, 256], [None, 256])]
    R["pairs"] = [[patched(**c), original(**c)] for c in cases]
    R["supported"] = [fai._is_fa4_supported(), fai._is_fa4_supported.__wrapped__()]
    R["fwd"] = cute._flash_attn_fwd("Q", "K", "V", num_splits=1)
    R["status"] = shim.status()
"""


@pytest.mark.parametrize("shape", ["four", "seven"])
@pytest.mark.parametrize("capability", ["9.0", "10.0", ""])
def test_other_gpus_and_no_gpu_are_untouched(site, shape, capability):
    result, _stderr = run(site(shape), GRID, capability=capability)
    assert all(p == o for p, o in result["pairs"]), result["pairs"]
    assert result["supported"][0] == result["supported"][1]
    assert result["fwd"] == [["vllm-out", "Q"], "vllm-lse", None, None]
    assert result["status"]["kernel_tried"] is False, "the kernel must not even be loaded off SM12x"
    if capability == "9.0":
        assert result["pairs"][0] == [3, 3]


def test_kill_switch_leaves_vllm_alone(site):
    result, _stderr = run(site("seven"), """
        import vllm.v1.attention.backends.fa_utils as fa_utils
        import vllm.vllm_flash_attn.flash_attn_interface as fai
        import dgxspark_fa4_sm120_shim as shim
        R["qual"] = qual(fa_utils.get_flash_attn_version)
        R["qual_supported"] = qual(fai._is_fa4_supported)
        R["hd128"] = fa_utils.get_flash_attn_version(head_size=128)
        R["status"] = shim.status()
    """, extra_env={"FA4_SM120_SHIM": "0"})
    assert result["qual"] == "vllm.v1.attention.backends.fa_utils.get_flash_attn_version"
    assert result["qual_supported"] == "vllm.vllm_flash_attn.flash_attn_interface._is_fa4_supported"
    assert result["hd128"] == 2, "vLLM's own answer on SM12x"
    assert result["status"]["enabled"] is False and result["status"]["finder_installed"] is False


MANY_CALLS = """
    import vllm.v1.attention.backends.fa_utils as fa_utils
    import vllm.vllm_flash_attn.flash_attn_interface as fai
    import vllm.vllm_flash_attn.cute.interface as cute
    import dgxspark_fa4_sm120_shim as shim
    R["versions"] = [fa_utils.get_flash_attn_version(head_size=h) for h in (64, 128, 128, 256)]
    R["supported"] = fai._is_fa4_supported()
    R["fwd"] = cute._flash_attn_fwd("Q", "K", "V", num_splits=1)
    R["status"] = shim.status()
"""


def _assert_one_warning_and_vllm_behaviour(result, stderr, reason):
    assert result["versions"] == [2, 2, 2, 2], "vLLM's own choice on SM12x is FA2"
    assert result["supported"][0] is False
    assert result["fwd"][0] == ["vllm-out", "Q"]
    assert result["status"]["kernel_loaded"] is False and reason in result["status"]["kernel_error"]
    assert stderr.count("could not be loaded") == 1, stderr
    assert "Traceback" not in stderr


def test_missing_kernel_directory_warns_once_and_falls_back(site, tmp_path):
    result, stderr = run(site("seven", kernel_dir=tmp_path / "nowhere"), MANY_CALLS)
    _assert_one_warning_and_vllm_behaviour(result, stderr, "missing __init__.py")


def test_broken_kernel_warns_once_and_falls_back(site, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(STANDIN_KERNEL, broken)
    (broken / "build" / "torch-cuda" / "__init__.py").write_text("raise ImportError('stand-in failure: no cutlass here')\n")
    result, stderr = run(site("seven", kernel_dir=broken), MANY_CALLS)
    _assert_one_warning_and_vllm_behaviour(result, stderr, "stand-in failure")


def test_a_failing_patch_never_breaks_import(site):
    sitedir = site("seven")
    # A vLLM whose fa_utils has no get_flash_attn_version: the patch fails, the import must not.
    (sitedir / "vllm" / "v1" / "attention" / "backends" / "fa_utils.py").write_text("VALUE = 1\n")
    result, stderr = run(sitedir, """
        import vllm.v1.attention.backends.fa_utils as fa_utils
        import vllm.vllm_flash_attn.flash_attn_interface as fai
        import dgxspark_fa4_sm120_shim as shim
        R["value"] = fa_utils.VALUE
        R["qual_supported"] = qual(fai._is_fa4_supported)
        R["status"] = shim.status()
    """)
    assert result["value"] == 1
    assert result["qual_supported"].startswith("dgxspark_fa4_sm120_shim."), "the other patches still apply"
    assert any("get_flash_attn_version" in e for e in result["status"]["errors"])
    assert stderr.count("[dgxspark fa4 shim]") == 1


def test_a_broken_vllm_module_raises_its_own_error(site):
    sitedir = site("seven")
    (sitedir / "vllm" / "vllm_flash_attn" / "cute" / "interface.py").write_text("raise RuntimeError('vllm own error')\n")
    result, _stderr = run(sitedir, """
        try:
            import vllm.vllm_flash_attn.cute.interface
        except RuntimeError as exc:
            R["error"] = str(exc)
    """)
    assert result["error"] == "vllm own error"


def test_configured_version_and_batch_invariance_are_respected(site):
    sitedir = site("seven")
    body = """
        import vllm.v1.attention.backends.fa_utils as fa_utils
        R["hd128"] = fa_utils.get_flash_attn_version(head_size=128)
    """
    assert run(sitedir, body, extra_env={"STANDIN_FA_VERSION": "2"})[0]["hd128"] == 2
    assert run(sitedir, body, extra_env={"STANDIN_BATCH_INVARIANT": "1"})[0]["hd128"] == 2
    assert run(sitedir, body)[0]["hd128"] == 4


def test_loader_keeps_the_real_loaders_features_and_reload_repatches(site):
    result, _stderr = run(site("seven"), """
        import importlib, inspect
        import vllm.v1.attention.backends.fa_utils as fa_utils
        R["source_has_def"] = "def get_flash_attn_version" in inspect.getsource(fa_utils)
        R["filename"] = fa_utils.__spec__.loader.get_filename(fa_utils.__name__)
        R["signature"] = str(inspect.signature(fa_utils.get_flash_attn_version))
        importlib.reload(fa_utils)
        R["qual_after_reload"] = qual(fa_utils.get_flash_attn_version)
        R["hd128"] = fa_utils.get_flash_attn_version(head_size=128)
    """)
    assert result["source_has_def"]
    assert result["filename"].endswith("fa_utils.py")
    assert "supports_fa4_hd256=False" in result["signature"], "inspect follows __wrapped__ to vLLM's signature"
    assert result["qual_after_reload"].endswith("_patch_fa_utils.<locals>.get_flash_attn_version")
    assert result["hd128"] == 4


def test_kernel_call_adaptation(site):
    result, stderr = run(site("seven"), """
        import vllm.vllm_flash_attn.cute.interface as cute
        import vllm.v1.attention.backends.fa_utils as fa_utils
        fa_utils.get_flash_attn_version(head_size=128)   # loads the kernel
        import dgxspark_fa4_sm120_kernel.interface as kernel
        R["trivial_dropped"] = cute._flash_attn_fwd("Q", "K", "V", gather_kv_indices=None, fp8_kv_dequant=False,
                                                     num_splits=0)
        R["calls_after_trivial"] = len(kernel.CALLS)
        R["compile_only"] = cute._flash_attn_fwd("Q", "K", "V", compile_only=True)
        R["calls_after_compile_only"] = len(kernel.CALLS)
        try:
            cute._flash_attn_fwd("Q", "K", "V", gather_kv_indices="IDX", page_table="BT")
        except AssertionError as exc:
            R["unsupported"] = str(exc)
        cute._flash_attn_fwd("Q", "K", "V", gather_kv_indices="IDX")
        R["calls_end"] = len(kernel.CALLS)
    """)
    assert result["trivial_dropped"] == [["standin-out", "Q"], None, None, None]
    assert result["calls_after_trivial"] == 1
    assert result["compile_only"] is None and result["calls_after_compile_only"] == 1
    # An argument the SM120 kernel lacks, with a real value, goes to vLLM's own code (which asserts on SM12x).
    assert result["unsupported"] == "Paged KV not supported on SM 12.0 in this PR"
    assert result["calls_end"] == 1
    assert stderr.count("has no parameter(s) gather_kv_indices") == 1


# ---- pure helpers, in process -------------------------------------------------------------

@pytest.mark.parametrize("value,expected", [("1", True), ("", True), ("0", False), ("false", False), (" OFF ", False), ("no", False)])
def test_kill_switch_values(monkeypatch, value, expected):
    monkeypatch.setenv("FA4_SM120_SHIM", value)
    assert shim.enabled() is expected


def test_fit_pads_and_truncates():
    assert shim._fit(("o", "l"), 4) == ("o", "l", None, None)
    assert shim._fit(("o", "l", "p", "m"), 2) == ("o", "l")
    assert shim._fit("o", 2) == ("o", None)
    assert shim._fit(("o", "l"), None) == ("o", "l")


def test_trivial_values():
    assert shim._trivial(None, "x") and shim._trivial(False, True) and shim._trivial(3, 3)
    assert not shim._trivial("IDX", None) and not shim._trivial(True, False)
    assert not shim._trivial(object(), None)


def _returns_four(flag):
    def inner():
        return "not a tuple"
    if flag:
        return 1, 2, 3, 4
    return (None, None, inner, None)


def _returns_mixed(flag):
    if flag:
        return 1, 2
    return 1, 2, 3, 4


def test_return_arity_reads_the_function_and_ignores_nested_returns():
    assert shim._return_arity(_returns_four) == 4
    assert shim._return_arity(_returns_mixed) is None
    assert shim._return_arity(len) is None


CUTLASS_STANDIN = {
    # A stand-in of the CUTLASS DSL surface the compat step touches (not the real package): a newer release
    # where ThrMma moved out of cute.core and make_fragment is gone.
    "cutlass/__init__.py": "class Int32(int):\n    pass\n",
    "cutlass/cute/__init__.py": ("from . import core\n\nclass ThrMma:\n    pass\n\nclass _Layout(tuple):\n    pass\n\n"
                                 "def make_layout(shape):\n    return _Layout(shape)\n\n"
                                 "def make_fragment_like(src, dtype=None):\n    return ('fragment', src, dtype)\n"),
    "cutlass/cute/core.py": "",
    "cutlass/cute/typing.py": "from . import _Layout as Layout\nComposedLayout = Layout\nTensor = Layout\n",
}


def test_dsl_compat_adds_only_missing_names(site, tmp_path):
    sitedir = site("seven")
    for rel, text in CUTLASS_STANDIN.items():
        (sitedir / rel).parent.mkdir(parents=True, exist_ok=True)
        (sitedir / rel).write_text(text)
    kernel = tmp_path / "kernel"
    shutil.copytree(STANDIN_KERNEL, kernel)
    # a kernel interface with the window resolver that newer DSLs need typed
    with open(kernel / "build" / "torch-cuda" / "interface.py", "a") as handle:
        handle.write("\n\ndef _resolve_causal_local_window(causal, left, right, mask_mod=None):\n"
                     "    return causal, left is not None, left, 0 if causal else right\n")
    (sitedir / "zzz_dgxspark_fa4_sm120.pth").write_text(standin_vllm.render_pth(kernel))
    result, _stderr = run(sitedir, """
        import vllm.v1.attention.backends.fa_utils as fa_utils
        R["hd128"] = fa_utils.get_flash_attn_version(head_size=128)
        import cutlass, cutlass.cute as cute
        R["thrmma_alias"] = cute.core.ThrMma is cute.ThrMma
        R["fragment"] = list(cute.make_fragment((4, 8), "f32"))
        import dgxspark_fa4_sm120_kernel.interface as iface
        causal, local, left, right = iface._resolve_causal_local_window(True, 128, None)
        R["window_types"] = [type(left).__name__, type(right).__name__, local]
    """)
    assert result["hd128"] == 4
    assert result["thrmma_alias"] is True
    assert result["fragment"] == ["fragment", [4, 8], "f32"], "a plain shape becomes a layout first"
    assert result["window_types"] == ["Int32", "Int32", True]
