"""Unit tests of the nvidia-smi / nvcc parsing in plugins/module_utils/gpu.py."""

from __future__ import annotations

import pytest

from ansible_collections.dgxspark.vllm.plugins.module_utils import gpu

# Real line from an H200 (FACTS.md section 1), same query fields and order as gpu.QUERY_FIELDS.
H200_LINE = "NVIDIA H200, 9.0, 580.159.04, 143771, GPU-251d5ba9-6f33-8bf4-9283-451ed75b3430"
# GB10-like lines: unified memory prints [N/A] or [Not Supported] for memory.total.
GB10_NA_LINE = "NVIDIA GB10, 12.1, 580.95.05, [N/A], GPU-0b7c0a8e-1111-2222-3333-444455556666"
GB10_NS_LINE = "NVIDIA GB10, 12.1, 580.95.05, [Not Supported], GPU-0b7c0a8e-1111-2222-3333-444455556666"
RTX5090_LINE = "NVIDIA GeForce RTX 5090, 12.0, 580.95.05, 32607, GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


def test_query_args_match_the_field_order():
    assert gpu.query_args() == [
        "--query-gpu=name,compute_cap,driver_version,memory.total,uuid",
        "--format=csv,noheader,nounits",
    ]


def test_real_h200_line():
    (entry,) = gpu.parse_gpu_query(H200_LINE + "\n")
    assert entry == {
        "index": 0,
        "name": "NVIDIA H200",
        "uuid": "GPU-251d5ba9-6f33-8bf4-9283-451ed75b3430",
        "compute_capability": "9.0",
        "compute_capability_major": 9,
        "compute_capability_minor": 0,
        "torch_cuda_arch": "9.0a",
        "memory_total_mib": 143771,
        "driver_version": "580.159.04",
    }


@pytest.mark.parametrize("line", [GB10_NA_LINE, GB10_NS_LINE])
def test_gb10_unified_memory_is_null(line):
    (entry,) = gpu.parse_gpu_query(line)
    assert entry["memory_total_mib"] is None
    assert entry["compute_capability"] == "12.1"
    assert entry["torch_cuda_arch"] == "12.1a"
    assert entry["name"] == "NVIDIA GB10"


def test_two_gpus_keep_their_order_and_index():
    gpus = gpu.parse_gpu_query(RTX5090_LINE + "\n" + GB10_NA_LINE + "\n\n")
    assert [g["index"] for g in gpus] == [0, 1]
    assert [g["torch_cuda_arch"] for g in gpus] == ["12.0a", "12.1a"]
    facts = gpu.summarize(gpus)
    assert facts["present"] is True and facts["count"] == 2 and facts["reason"] is None
    assert facts["compute_capabilities"] == ["12.0", "12.1"]
    assert facts["torch_cuda_arch_list"] == "12.0a;12.1a"


def test_no_gpu_summary_carries_the_reason():
    facts = gpu.summarize(gpu.parse_gpu_query(""), reason="nvidia-smi not found")
    assert facts == {
        "present": False, "reason": "nvidia-smi not found", "count": 0, "gpus": [],
        "compute_capabilities": [], "torch_cuda_arch_list": "", "driver_version": None,
    }


@pytest.mark.parametrize(
    "garbage",
    [
        "No devices were found, but here is some text",
        "NVIDIA H200, nine, 580.159.04, 143771, GPU-x",
        "NVIDIA H200, 9.0, 580.159.04, lots, GPU-x",
        "NVIDIA H200, 9.0",
    ],
)
def test_garbage_is_quoted_in_the_error(garbage):
    with pytest.raises(gpu.GpuParseError) as err:
        gpu.parse_gpu_query(H200_LINE + "\n" + garbage)
    assert repr(garbage) in str(err.value)


def test_driver_failure_text_is_not_a_gpu_line():
    text = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running."
    with pytest.raises(gpu.GpuParseError):
        gpu.parse_gpu_query(text)


@pytest.mark.parametrize("cap,arch", [("12.1", "12.1a"), ("12.0", "12.0a"), ("9.0", "9.0a"), ("8.6", "8.6")])
def test_torch_arch_for(cap, arch):
    assert gpu.torch_arch_for(cap) == arch


def test_nvcc_version():
    out = (
        "nvcc: NVIDIA (R) Cuda compiler driver\nCopyright (c) 2005-2025 NVIDIA Corporation\n"
        "Built on Wed_Aug_20_01:58:59_PM_PDT_2025\nCuda compilation tools, release 13.0, V13.0.88\n"
        "Build cuda_13.0.r13.0/compiler.36424714_0\n"
    )
    assert gpu.parse_nvcc_version(out) == {"version": "13.0", "build": "13.0.88"}
    with pytest.raises(gpu.GpuParseError) as err:
        gpu.parse_nvcc_version("bash: nvcc: command not found")
    assert "command not found" in str(err.value)


FIXTURES = __import__("pathlib").Path(__file__).resolve().parents[3] / "fixtures" / "nvidia-smi"


def test_output_captured_on_a_real_h200_machine():
    """Captured 2026-11-21 on the device machine with
    `nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total,uuid --format=csv,noheader,nounits`
    and `nvcc --version` (the query built from gpu.query_args())."""
    (entry,) = gpu.parse_gpu_query((FIXTURES / "h200-2026-11-21.csv").read_text())
    assert entry["name"] == "NVIDIA H200"
    assert entry["compute_capability"] == "9.0" and entry["torch_cuda_arch"] == "9.0a"
    assert entry["memory_total_mib"] == 143771
    assert entry["driver_version"] == "580.159.04"
    assert entry["uuid"] == "GPU-2f82da84-b6a5-7849-fd1f-d628b72768f0"
    toolkit = gpu.parse_nvcc_version((FIXTURES / "nvcc-13.0-h200-2026-11-21.txt").read_text())
    assert toolkit == {"version": "13.0", "build": "13.0.88"}


def test_driver_failure_reason_quotes_command_code_and_output_on_one_line():
    reason = gpu.driver_failure_reason("/usr/bin/nvidia-smi", 9, "NVIDIA-SMI has failed\n  because", "driver\n")
    assert reason == "/usr/bin/nvidia-smi failed (rc=9): NVIDIA-SMI has failed because driver"
    assert gpu.driver_failure_reason("/x", 255, "", "").endswith("(rc=255): no output")
    assert len(gpu.driver_failure_reason("/x", 1, "y" * 5000, "")) < 450
