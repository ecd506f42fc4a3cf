"""Stand-in for the SM120 FA4 kernel's interface module (see ../../README.md). Not a kernel.

_flash_attn_fwd has the keyword parameters of the upstream FA4 CuTe forward that vLLM passes,
records every call in CALLS and returns (out, lse) as the real kernel package does.
"""

CALLS = []


def _flash_attn_fwd(q, k, v, cu_seqlens_q=None, cu_seqlens_k=None, seqused_q=None, seqused_k=None,
                    max_seqlen_q=None, max_seqlen_k=None, page_table=None, softmax_scale=None, causal=False,
                    softcap=None, window_size_left=None, window_size_right=None, learnable_sink=None,
                    num_splits=1, pack_gqa=None, score_mod=None, mask_mod=None, block_sparse_tensors=None,
                    return_lse=False, out=None, lse=None, aux_tensors=None):
    if not isinstance(num_splits, int) or num_splits < 1:
        raise AssertionError("stand-in SM120 kernel: num_splits must be a count >= 1, got %r" % (num_splits,))
    CALLS.append({"q": q, "k": k, "v": v, "page_table": page_table, "num_splits": num_splits,
                  "causal": causal, "return_lse": return_lse, "out": out,
                  "window_size_left": window_size_left, "window_size_right": window_size_right})
    result = out if out is not None else ("standin-out", q)
    return result, ("standin-lse" if return_lse else None)
