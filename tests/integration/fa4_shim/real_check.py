"""Runs inside an overlay venv over a real vLLM release (see realvllm.py) and prints one JSON line.

Exercises the real vLLM code on a CPU-only machine, with two stand-ins, both named in the output:
- vllm.vllm_flash_attn._vllm_fa2_C: an empty module, registered only after the real library failed to
  load for lack of libcuda (vllm_flash_attn/__init__.py refuses to import without it);
- the platform: vLLM's own resolved platform class with get_device_capability overridden to report
  CAP (switched between 12.1, 9.0 and none), installed as vllm.platforms._current_platform.
vllm.config needs vLLM's dependencies (pydantic, transformers); where it cannot import, a stand-in
returning no config is registered and named too.
"""

import ast
import importlib
import inspect
import importlib.util
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
R["qualnames"] = {"get_flash_attn_version": qual(fa_utils.get_flash_attn_version),
                  "_is_fa4_supported": qual(fai._is_fa4_supported),
                  "_flash_attn_fwd": qual(cute._flash_attn_fwd)}

# Every call of get_flash_attn_version in the installed vLLM sources, by its keyword set.
VALUES = {"requires_alibi": False, "head_size": 128, "head_size_v": 128, "has_sinks": False,
          "requires_softcap": False, "kv_cache_block_size": 16, "supports_fa4_hd256": False}
root = os.path.dirname(vllm.__file__)
callers = {}
for dirpath, dirnames, filenames in os.walk(root):
    for fn in filenames:
        if fn.endswith(".py"):
            file = os.path.join(dirpath, fn)
            text = open(file, encoding="utf-8").read()
            if "get_flash_attn_version(" not in text:
                continue
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "get_flash_attn_version":
                    assert not node.args, "a positional call at %s:%d" % (file, node.lineno)
                    key = tuple(sorted(k.arg for k in node.keywords))
                    callers.setdefault(key, "%s:%d" % (os.path.relpath(file, root), node.lineno))
R["caller_keyword_sets"] = sorted(list(k) for k in callers)


def switch(cap):
    CapabilityPlatform.CAP = cap
    if shim is not None:
        shim._route_cache["platform"] = None  # a real process never changes GPU; this test does


def call(func, **kwargs):
    try:
        return func(**kwargs)
    except Exception as exc:
        return "%s: %s" % (type(exc).__name__, exc)


original = getattr(fa_utils.get_flash_attn_version, "__wrapped__", fa_utils.get_flash_attn_version)
R["signature"] = list(inspect.signature(original).parameters)
EVERY = {k: VALUES[k] for k in R["signature"]}
R["by_capability"] = {}
for label, cap in (("12.1", (12, 1)), ("12.0", (12, 0)), ("9.0", (9, 0)), ("none", None)):
    switch(cap)
    rows = []
    for key, where in sorted(callers.items()):
        kwargs = {k: VALUES[k] for k in key}
        for head in (64, 128, 256):
            kw = dict(kwargs)
            if "head_size" in kw:
                kw["head_size"] = head
                if "head_size_v" in kw:
                    kw["head_size_v"] = head
            rows.append({"where": where, "kwargs": kw, "shim": call(fa_utils.get_flash_attn_version, **kw),
                         "vllm": call(original, **kw)})
    R["by_capability"][label] = {
        "callers": rows,
        "hd128": call(fa_utils.get_flash_attn_version, head_size=128),
        "hd128_vllm": call(original, head_size=128),
        "hd256": call(fa_utils.get_flash_attn_version, head_size=256),
        "hd256_vllm": call(original, head_size=256),
        "alibi": call(fa_utils.get_flash_attn_version, requires_alibi=True, head_size=64),
        "every_parameter_hd128": call(fa_utils.get_flash_attn_version, **EVERY),
        "is_fa4_supported": list(fai._is_fa4_supported()),
        "is_fa4_supported_vllm": list(getattr(fai._is_fa4_supported, "__wrapped__", fai._is_fa4_supported)()),
    }

# vLLM's own FA4 branch, called for real on SM12x: paged KV, num_splits=0, four values unpacked.
if shim is not None and shim.enabled():
    switch((12, 1))
    q = torch.randn(4, 2, 64)
    k = torch.randn(1, 16, 1, 64)
    v = torch.randn(1, 16, 1, 64)
    block_table = torch.zeros(1, 1, dtype=torch.int32)
    out, lse = fai.flash_attn_varlen_func(q, k, v, max_seqlen_q=4, cu_seqlens_q=torch.tensor([0, 4], dtype=torch.int32),
                                          max_seqlen_k=16, seqused_k=torch.tensor([16], dtype=torch.int32),
                                          block_table=block_table, causal=True, return_softmax_lse=True,
                                          num_splits=0, fa_version=4)
    kernel = sys.modules["dgxspark_fa4_sm120_kernel.interface"]
    last = kernel.CALLS[-1]
    R["varlen"] = {"calls": len(kernel.CALLS), "num_splits": last["num_splits"], "page_table_is_block_table": last["page_table"] is block_table,
                   "q_passed": last["q"] is q or bool(torch.equal(last["q"], q)), "out": out[0] if isinstance(out, tuple) else repr(out),
                   "lse": lse, "causal": last["causal"], "return_lse": last["return_lse"]}
    R["shim_status"] = shim.status()

print("RESULT=" + json.dumps(R, default=repr))
