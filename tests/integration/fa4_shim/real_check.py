"""Runs inside an overlay venv over a real vLLM release (see realvllm.py) and prints one JSON line.

The same script runs with this collection's shim, with the seed-style stand-in shim and with no shim at all
(vLLM alone); the tests compare the answers. It exercises the real vLLM code on a CPU-only machine, with two
stand-ins, both named in the output:
- vllm.vllm_flash_attn._vllm_fa2_C: an empty module, registered only after the real library failed to
  load for lack of libcuda (vllm_flash_attn/__init__.py refuses to import without it);
- the platform: vLLM's own resolved platform class with get_device_capability overridden to report
  CAP (switched between 12.1, 12.0, 9.0 and none), installed as vllm.platforms._current_platform.
vllm.config needs vLLM's dependencies (pydantic, transformers); where it cannot import, a stand-in
returning no config is registered and named too.
"""

import ast
import importlib
import importlib.util
import inspect
import json
import os
import sys
import types

R = {"stand_ins": []}

import torch  # noqa: E402
import vllm  # noqa: E402
from vllm import platforms  # noqa: E402
from vllm.platforms.interface import DeviceCapability  # noqa: E402

name = "vllm.vllm_flash_attn._vllm_fa2_C"
path = [os.path.join(os.path.dirname(vllm.__file__), "vllm_flash_attn", f)
        for f in os.listdir(os.path.join(os.path.dirname(vllm.__file__), "vllm_flash_attn")) if f.startswith("_vllm_fa2_C")][0]
try:
    spec = importlib.util.spec_from_file_location(name, path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    R["fa2_real_load"] = "loaded"
except ImportError as exc:
    R["fa2_real_load"] = str(exc)
    assert "libcuda.so" in str(exc), exc
    sys.modules[name] = types.ModuleType(name)
    R["stand_ins"].append(name)

real = platforms.current_platform


class CapabilityPlatform(type(real)):
    CAP = None

    @classmethod
    def get_device_capability(cls, device_id=0):
        return None if cls.CAP is None else DeviceCapability(*cls.CAP)


platforms._current_platform = CapabilityPlatform()
R["stand_ins"].append("platform:%s" % type(real).__name__)
try:
    import vllm.config  # noqa: F401
except ImportError:
    stub = types.ModuleType("vllm.config")
    stub.get_current_vllm_config_or_none = lambda: None
    sys.modules["vllm.config"] = stub
    R["stand_ins"].append("vllm.config")

fa_utils = importlib.import_module("vllm.v1.attention.backends.fa_utils")
fai = importlib.import_module("vllm.vllm_flash_attn.flash_attn_interface")
cute = importlib.import_module("vllm.vllm_flash_attn.cute.interface")
shim = sys.modules.get("dgxspark_fa4_sm120_shim")


def qual(func):
    return "%s.%s" % (func.__module__, func.__qualname__)


R["vllm_version"] = vllm.__version__
R["shim_loaded"] = shim is not None
R["qualnames"] = {"get_flash_attn_version": qual(fa_utils.get_flash_attn_version),
                  "_is_fa4_supported": qual(fai._is_fa4_supported),
                  "_flash_attn_fwd": qual(cute._flash_attn_fwd)}

# Every call of get_flash_attn_version in the installed vLLM sources, with the function or class it sits in.
VALUES = {"requires_alibi": False, "head_size": 128, "head_size_v": 128, "has_sinks": False,
          "requires_local_attention": False,  # vLLM 0.27 only
          "requires_softcap": False, "kv_cache_block_size": 16, "supports_fa4_hd256": False}
HEAD_SIZES = ("head_size", "head_size_v")
root = os.path.dirname(vllm.__file__)
sites = []


def _walk(node, scope, rel):
    for child in ast.iter_child_nodes(node):
        inner = scope
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            inner = scope + [child.name]
        if isinstance(child, ast.Call) and getattr(child.func, "id", getattr(child.func, "attr", None)) == "get_flash_attn_version":
            assert not child.args, "a positional call at %s:%d" % (rel, child.lineno)
            keywords = sorted(k.arg for k in child.keywords)
            sites.append({"where": "%s:%d" % (rel, child.lineno), "in": "%s:%s" % (rel, ".".join(scope) or "<module>"),
                          "keywords": keywords, "head_size_less": not any(k in HEAD_SIZES for k in keywords)})
        _walk(child, inner, rel)


for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for fn in sorted(filenames):
        if fn.endswith(".py"):
            file = os.path.join(dirpath, fn)
            text = open(file, encoding="utf-8").read()
            if "get_flash_attn_version(" in text:
                _walk(ast.parse(text), [], os.path.relpath(file, root))
R["sites"] = sites
R["caller_keyword_sets"] = sorted({tuple(s["keywords"]) for s in sites})


def switch(cap):
    CapabilityPlatform.CAP = cap
    if shim is not None:
        shim._route_cache["platform"] = None  # a real process never changes GPU; this test does


def call(func, *args, **kwargs):
    try:
        return func(*args, **kwargs)
    except Exception as exc:
        return "%s: %s" % (type(exc).__name__, exc)


# vLLM's own functions that answer for the whole model, where they can be imported on this host: (label, module,
# name, arguments). The name is looked up at call time, as vLLM's callers do, so a patched attribute is what runs.
WHOLE_MODEL = [("flash_attn_supports_sinks()", fa_utils, "flash_attn_supports_sinks", ()),
               ("is_fa_version_supported(4)", fai, "is_fa_version_supported", (4,)),
               ("fa_version_unsupported_reason(4)", fai, "fa_version_unsupported_reason", (4,)),
               ("_is_fa4_supported()", fai, "_is_fa4_supported", ()),
               ("flash_attn_supports_mla()", fa_utils, "flash_attn_supports_mla", ())]
if hasattr(fa_utils, "flash_attn_supports_kv_cache_dtype"):  # 0.27 and later; it calls without a head size
    WHOLE_MODEL.append(("flash_attn_supports_kv_cache_dtype('fp8')", fa_utils, "flash_attn_supports_kv_cache_dtype",
                        ("fp8",)))


def whole_model(module, name, args):
    answer = call(getattr(module, name), *args)
    return list(answer) if isinstance(answer, tuple) else answer


R["signature"] = list(inspect.signature(fa_utils.get_flash_attn_version).parameters)
EVERY = {k: VALUES[k] for k in R["signature"]}
R["by_capability"] = {}
for label, cap in (("12.1", (12, 1)), ("12.0", (12, 0)), ("9.0", (9, 0)), ("none", None)):
    switch(cap)
    rows = []
    for site in sites:
        kwargs = {k: VALUES[k] for k in site["keywords"]}
        for head in ((None,) if site["head_size_less"] else (64, 128, 256)):
            kw = dict(kwargs)
            for key in HEAD_SIZES:
                if key in kw:
                    kw[key] = head
            rows.append({"where": site["where"], "kwargs": kw, "answer": call(fa_utils.get_flash_attn_version, **kw)})
    R["by_capability"][label] = {
        "callers": rows,
        "whole_model": {text: whole_model(module, name, args) for text, module, name, args in WHOLE_MODEL},
        "hd128": call(fa_utils.get_flash_attn_version, head_size=128),
        "hd256": call(fa_utils.get_flash_attn_version, head_size=256),
        "alibi": call(fa_utils.get_flash_attn_version, requires_alibi=True, head_size=64),
        "no_head_size_every_other_parameter": call(fa_utils.get_flash_attn_version,
                                                   **{k: v for k, v in EVERY.items() if k not in HEAD_SIZES}),
        "every_parameter_hd128": call(fa_utils.get_flash_attn_version, **EVERY),
    }

switch((12, 1))
kernel = None
if shim is not None and shim.enabled():
    # vLLM's own FA4 branch, called for real on SM12x: paged KV, num_splits=0, four values unpacked.
    q = torch.randn(4, 2, 64)
    k = torch.randn(1, 16, 1, 64)
    v = torch.randn(1, 16, 1, 64)
    block_table = torch.zeros(1, 1, dtype=torch.int32)
    fa_utils.get_flash_attn_version(head_size=64)  # the layer decision that loads the kernel
    out, lse = fai.flash_attn_varlen_func(q, k, v, max_seqlen_q=4, cu_seqlens_q=torch.tensor([0, 4], dtype=torch.int32),
                                          max_seqlen_k=16, seqused_k=torch.tensor([16], dtype=torch.int32),
                                          block_table=block_table, causal=True, return_softmax_lse=True,
                                          num_splits=0, fa_version=4)
    kernel = sys.modules.get("dgxspark_fa4_sm120_kernel.interface")
    last = kernel.CALLS[-1]
    R["varlen"] = {"calls": len(kernel.CALLS), "num_splits": last["num_splits"], "page_table_is_block_table": last["page_table"] is block_table,
                   "q_passed": last["q"] is q or bool(torch.equal(last["q"], q)), "out": out[0] if isinstance(out, tuple) else repr(out),
                   "lse": lse, "causal": last["causal"], "return_lse": last["return_lse"]}

# Ahead-of-time compile (vLLM 0.25 and later): vLLM's own compile-only entry point for FA4, at 12.1.
# FLASH_ATTENTION_ARCH is vLLM's own override of the arch its FA4 code reads from torch.cuda (a stand-in for the
# GPU here, named in the output): without it vLLM's FA4 code stops at "Torch not compiled with CUDA enabled".
compile_fa4 = getattr(fai, "compile_flash_attn_varlen_func_from_specs", None)
if compile_fa4 is not None:
    os.environ["FLASH_ATTENTION_ARCH"] = "sm_121"
    getattr(getattr(cute, "_get_device_arch", None), "cache_clear", lambda: None)()
    R["stand_ins"].append("FLASH_ATTENTION_ARCH=sm_121")
    before = len(kernel.CALLS) if kernel is not None else None
    # a paged decode shape, with only the keywords this release's entry point has
    spec = dict(q_shape=(4, 2, 64), k_shape=(1, 16, 1, 64), v_shape=(1, 16, 1, 64), q_dtype=torch.bfloat16,
                cu_seqlens_q_shape=(2,), seqused_k_shape=(1,), page_table_shape=(1, 1), max_seqlen_q=4,
                max_seqlen_k=16, causal=True, fa_version=4)
    accepted = inspect.signature(compile_fa4).parameters
    R["compile_only_keywords"] = sorted(k for k in spec if k in accepted)
    try:
        value = compile_fa4(**{k: v for k, v in spec.items() if k in accepted})
        R["compile_only"] = {"returned": repr(value)}
    except Exception as exc:
        R["compile_only"] = {"raised": "%s: %s" % (type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")}
    if kernel is not None:
        R["compile_only"]["kernel_calls"] = len(kernel.CALLS) - before

if shim is not None:
    R["shim_status"] = shim.status()
print("RESULT=" + json.dumps(R, default=repr))
