# Copyright: dgxspark.vllm contributors
# Apache License 2.0 (see LICENSE)
"""Numerics gate for a vLLM FA2 library (_vllm_fa2_C.abi3.so), shipped by the dgxspark.vllm fa2_native role.

It runs variable-length attention through the library and compares every output with an fp32
reference computed here with plain torch (no attention kernels):

  * dtypes fp16 and bf16; causal and non-causal; head dims 64, 128 and 256;
  * GQA (8 query heads on 2 KV heads) and plain multi-head (4 on 4);
  * one varlen batch per case with sequence lengths 1 to 300, keys at least as long as queries
    (causal masks are aligned bottom-right, as FA2 does for chunked prefill).

A case passes when the output is finite and its largest absolute error against the reference is at
most the tolerance of its dtype: fp16 5e-3, bf16 4e-2. (A real sm_90 build of this library measured
1.3e-3 and 1.3e-2 on the same kind of cases; the tolerances leave about 3x headroom.)

Ways to call the library (--api):
  op    torch.ops.load_library(--library), then torch.ops._vllm_fa2_C.varlen_fwd, with its arguments
        filled by name from the operator's own schema;
  vllm  vllm.vllm_flash_attn.flash_attn_varlen_func(fa_version=2), after checking that the module vLLM
        loaded is the file given by --library;
  auto  vllm when it can be imported, else op (the default).

--self-test checks the harness itself, without any FA2 library: it runs the same cases against
torch's scaled_dot_product_attention (a function with a known-good answer), against a deliberately
wrong function (keys shifted by one position, a classic indexing bug) and against a function that
returns one NaN. It exits 0 only when the first passes every case and the other two fail every case.

Exit codes: 0 all passed, 1 a case failed, 2 the library could not be loaded or called, 3 no CUDA device.
The last line of output is a JSON summary when --json is given.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

TOLERANCES = {"float16": 5e-3, "bfloat16": 4e-2}
HEAD_DIMS = (64, 128, 256)
SEQLENS_Q = (1, 37, 128, 300)
SEQLENS_K = (1, 61, 128, 300)


def build_cases(quick=False):
    cases = []
    for dtype in ("float16", "bfloat16"):
        for causal in (False, True):
            for head_dim in HEAD_DIMS:
                heads = (8, 2) if head_dim != 128 or not causal else (4, 4)
                cases.append({"dtype": dtype, "causal": causal, "head_dim": head_dim, "heads_q": heads[0],
                              "heads_k": heads[1], "seqlens_q": list(SEQLENS_Q), "seqlens_k": list(SEQLENS_K)})
    if quick:
        cases = [c for c in cases if c["head_dim"] != 256]
        for case in cases:
            case["seqlens_q"], case["seqlens_k"] = [1, 9, 33], [1, 17, 33]
    return cases


def make_inputs(torch, case, device, seed):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    dtype = getattr(torch, case["dtype"])
    total_q, total_k = sum(case["seqlens_q"]), sum(case["seqlens_k"])
    q = torch.randn(total_q, case["heads_q"], case["head_dim"], generator=gen)
    k = torch.randn(total_k, case["heads_k"], case["head_dim"], generator=gen)
    v = torch.randn(total_k, case["heads_k"], case["head_dim"], generator=gen)
    cu_q = torch.tensor([0] + list(_cumsum(case["seqlens_q"])), dtype=torch.int32)
    cu_k = torch.tensor([0] + list(_cumsum(case["seqlens_k"])), dtype=torch.int32)
    return {"q": q.to(device=device, dtype=dtype), "k": k.to(device=device, dtype=dtype),
            "v": v.to(device=device, dtype=dtype), "cu_q": cu_q.to(device), "cu_k": cu_k.to(device),
            "max_q": max(case["seqlens_q"]), "max_k": max(case["seqlens_k"]),
            "scale": 1.0 / math.sqrt(case["head_dim"]), "causal": case["causal"]}


def _cumsum(values):
    total = 0
    for value in values:
        total += value
        yield total


def _causal_mask(torch, len_q, len_k, device):
    """True where query i may attend key j: j <= i + (len_k - len_q) (bottom-right alignment)."""
    rows = torch.arange(len_q, device=device).unsqueeze(1)
    cols = torch.arange(len_k, device=device).unsqueeze(0)
    return cols <= rows + (len_k - len_q)


def reference(torch, inputs):
    """fp32 attention with plain tensor ops, one sequence at a time."""
    q, k, v = (inputs[n].float() for n in ("q", "k", "v"))
    group = q.shape[1] // k.shape[1]
    out = torch.zeros_like(q)
    cu_q, cu_k = inputs["cu_q"].tolist(), inputs["cu_k"].tolist()
    for b in range(len(cu_q) - 1):
        qb = q[cu_q[b]:cu_q[b + 1]]
        kb = k[cu_k[b]:cu_k[b + 1]].repeat_interleave(group, dim=1)
        vb = v[cu_k[b]:cu_k[b + 1]].repeat_interleave(group, dim=1)
        scores = torch.einsum("qhd,khd->hqk", qb, kb) * inputs["scale"]
        if inputs["causal"]:
            allowed = _causal_mask(torch, qb.shape[0], kb.shape[0], q.device)
            scores = scores.masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        probs = torch.nan_to_num(probs, nan=0.0)          # a query with no allowed key gives zeros, as FA2 does
        out[cu_q[b]:cu_q[b + 1]] = torch.einsum("hqk,khd->qhd", probs, vb)
    return out


# ------------------------------------------------------------------------------------------------
# functions under test


def sdpa_function(torch):
    """torch.nn.functional.scaled_dot_product_attention in the input dtype: the known-good function."""
    import torch.nn.functional as F

    def run(inputs, shift_keys=False):
        q, k, v = inputs["q"], inputs["k"], inputs["v"]
        group = q.shape[1] // k.shape[1]
        out = torch.empty_like(q)
        cu_q, cu_k = inputs["cu_q"].tolist(), inputs["cu_k"].tolist()
        for b in range(len(cu_q) - 1):
            qb = q[cu_q[b]:cu_q[b + 1]].transpose(0, 1)
            kb = k[cu_k[b]:cu_k[b + 1]].repeat_interleave(group, dim=1).transpose(0, 1)
            vb = v[cu_k[b]:cu_k[b + 1]].repeat_interleave(group, dim=1).transpose(0, 1)
            if shift_keys:
                kb = torch.roll(kb, shifts=1, dims=1)
            mask = None
            if inputs["causal"]:
                mask = _causal_mask(torch, qb.shape[1], kb.shape[1], q.device)
            ob = F.scaled_dot_product_attention(qb.unsqueeze(0), kb.unsqueeze(0), vb.unsqueeze(0), attn_mask=mask,
                                                scale=inputs["scale"])
            out[cu_q[b]:cu_q[b + 1]] = ob.squeeze(0).transpose(0, 1)
        return out

    return run


def wrong_function(torch):
    """Deliberately wrong: keys shifted by one position within each sequence."""
    good = sdpa_function(torch)
    return lambda inputs: good(inputs, shift_keys=True)


def nan_function(torch):
    """Right everywhere except one NaN in the output."""
    good = sdpa_function(torch)

    def run(inputs):
        out = good(inputs).clone()
        out.view(-1)[out.numel() // 2] = float("nan")
        return out

    return run


def op_function(torch, library):
    """torch.ops._vllm_fa2_C.varlen_fwd from the given file, arguments filled from its schema.
    With library None the operator must already be registered (used by the harness's own tests)."""
    if library:
        torch.ops.load_library(library)
    op = torch.ops._vllm_fa2_C.varlen_fwd
    schema = op.default._schema

    def run(inputs):
        values = {
            "q": inputs["q"], "k": inputs["k"], "v": inputs["v"], "out": None,
            "cu_seqlens_q": inputs["cu_q"], "cu_seqlens_k": inputs["cu_k"], "seqused_k": None, "leftpad_k": None,
            "block_table": None, "alibi_slopes": None, "max_seqlen_q": inputs["max_q"],
            "max_seqlen_k": inputs["max_k"], "p_dropout": 0.0, "softmax_scale": inputs["scale"],
            "zero_tensors": False, "is_causal": inputs["causal"], "window_size_left": -1,
            "window_size_right": -1, "softcap": 0.0, "return_softmax": False,
            "num_splits": 0, "gen": None,
        }
        args = []
        for arg in schema.arguments:
            if arg.name in values:
                args.append(values[arg.name])
            elif arg.has_default_value():
                args.append(arg.default_value)
            elif "Optional" in str(arg.type) or str(arg.type).endswith("?"):
                args.append(None)
            else:
                raise RuntimeError("varlen_fwd has an argument this harness does not know: %s (%s)" % (arg.name, arg.type))
        result = op(*args)
        return result[0] if isinstance(result, (list, tuple)) else result

    return run, "torch.ops._vllm_fa2_C.varlen_fwd from %s" % library


def vllm_function(torch, library):
    from vllm.vllm_flash_attn import flash_attn_varlen_func  # noqa: F401 - imports the installed _vllm_fa2_C

    loaded = sys.modules.get("vllm.vllm_flash_attn._vllm_fa2_C")
    loaded_file = getattr(loaded, "__file__", None)
    if library and loaded_file and os.path.realpath(loaded_file) != os.path.realpath(library):
        raise RuntimeError("vLLM loaded %s, not the library under test %s" % (loaded_file, library))

    def run(inputs):
        return flash_attn_varlen_func(
            q=inputs["q"], k=inputs["k"], v=inputs["v"], max_seqlen_q=inputs["max_q"], cu_seqlens_q=inputs["cu_q"],
            max_seqlen_k=inputs["max_k"], cu_seqlens_k=inputs["cu_k"], softmax_scale=inputs["scale"],
            causal=inputs["causal"], fa_version=2)

    return run, "vllm.vllm_flash_attn.flash_attn_varlen_func(fa_version=2) loading %s" % (loaded_file or library)


# ------------------------------------------------------------------------------------------------


def evaluate(torch, function, cases, device, seed=1234):
    results = []
    for index, case in enumerate(cases):
        row = dict(case, tol=TOLERANCES[case["dtype"]], max_abs_err=None, finite=None, passed=False, error=None)
        try:
            inputs = make_inputs(torch, case, device, seed + index)
            want = reference(torch, inputs)
            got = function(inputs)
            if device == "cuda":
                torch.cuda.synchronize()
            got = got.float()
            if tuple(got.shape) != tuple(want.shape):
                raise RuntimeError("output shape %s, expected %s" % (tuple(got.shape), tuple(want.shape)))
            row["finite"] = bool(torch.isfinite(got).all())
            row["max_abs_err"] = float((got - want).abs().max()) if row["finite"] else None
            row["passed"] = row["finite"] and row["max_abs_err"] <= row["tol"]
        except Exception as exc:  # a kernel error is a failed case, reported with its message
            row["error"] = "%s: %s" % (type(exc).__name__, exc)
        results.append(row)
    return results


def describe(row):
    err = "error %s" % row["error"] if row["error"] else (
        "NaN/Inf in output" if not row["finite"] else "max|err| %.2e (tol %.0e)" % (row["max_abs_err"], row["tol"]))
    return "%-4s %-8s %-10s hd=%-3d heads=%d/%d lens_q=%s: %s" % (
        "ok" if row["passed"] else "FAIL", row["dtype"], "causal" if row["causal"] else "noncausal", row["head_dim"],
        row["heads_q"], row["heads_k"], ",".join(map(str, row["seqlens_q"])), err)


def device_name(torch, device):
    if device != "cuda":
        return {"device": "cpu", "capability": None}
    major, minor = torch.cuda.get_device_capability()
    return {"device": torch.cuda.get_device_name(), "capability": "%d.%d" % (major, minor)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--library", help="the _vllm_fa2_C.abi3.so to test")
    parser.add_argument("--api", choices=["auto", "op", "vllm"], default="auto")
    parser.add_argument("--self-test", action="store_true", help="check the harness against known-good and wrong functions")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu only makes sense with --self-test")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter cases (for a CPU self-test)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    args = parser.parse_args(argv)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device visible to torch %s" % torch.__version__)
        return 3
    if not args.self_test and not args.library:
        parser.error("--library is required (or --self-test)")
    cases = build_cases(quick=args.quick)
    started = time.time()
    summary = {"torch": torch.__version__, "tolerances": TOLERANCES, "cases": len(cases)}
    summary.update(device_name(torch, args.device))

    if args.self_test:
        verdicts = {}
        for name, function, want_pass in (("known-good: torch scaled_dot_product_attention", sdpa_function(torch), True),
                                          ("deliberately wrong: keys shifted by one", wrong_function(torch), False),
                                          ("deliberately wrong: one NaN in the output", nan_function(torch), False)):
            rows = evaluate(torch, function, cases, args.device)
            passed = sum(r["passed"] for r in rows)
            expected = passed == len(rows) if want_pass else passed == 0
            verdicts[name] = {"passed_cases": passed, "cases": len(rows), "as_expected": expected}
            print("== %s: %d/%d cases pass -> %s"
                  % (name, passed, len(rows), "as expected" if expected else "NOT AS EXPECTED"))
            for row in rows:
                print("   " + describe(row))
        summary.update(mode="self-test", functions=verdicts, passed=all(v["as_expected"] for v in verdicts.values()),
                       seconds=round(time.time() - started, 1))
        print("self-test %s on %s (%s cases each, %.1f s)" % (
            "PASSED" if summary["passed"] else "FAILED", summary["device"], len(cases), summary["seconds"]))
        if args.json:
            print(json.dumps(summary))
        return 0 if summary["passed"] else 1

    try:
        api, fallback = args.api, None
        if api == "auto":
            try:
                import vllm.vllm_flash_attn  # noqa: F401
                api = "vllm"
            except Exception as exc:  # vLLM not importable here (not installed, or its own imports fail)
                api, fallback = "op", "%s: %s" % (type(exc).__name__, exc)
        function, label = (vllm_function if api == "vllm" else op_function)(torch, args.library)
        if fallback:
            label += " (vllm.vllm_flash_attn did not import: %s)" % fallback[:300]
    except Exception as exc:  # the library did not load: report it as such, not as a numerics failure
        print("cannot load %s through %s: %s: %s" % (args.library, args.api, type(exc).__name__, exc))
        if args.json:
            print(json.dumps(dict(summary, mode="library", passed=False, load_error="%s: %s" % (type(exc).__name__, exc))))
        return 2
    rows = evaluate(torch, function, cases, args.device)
    failed = [describe(r) for r in rows if not r["passed"]]
    summary.update(mode="library", api=label, library=args.library, passed=not failed, failed=failed,
                   max_abs_err={dt: max((r["max_abs_err"] or 0.0) for r in rows if r["dtype"] == dt) for dt in TOLERANCES},
                   seconds=round(time.time() - started, 1))
    print("testing %s on %s (capability %s)" % (label, summary["device"], summary["capability"]))
    for row in rows:
        print("   " + describe(row))
    print("%d/%d cases pass" % (len(rows) - len(failed), len(rows)))
    if args.json:
        print(json.dumps(summary))
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
