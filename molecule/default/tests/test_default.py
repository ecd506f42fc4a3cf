"""Verify the default scenario: site.yml converged in a GPU-less systemd container."""

from __future__ import annotations


def test_systemd_is_pid_1(host):
    assert host.file("/proc/1/comm").content_string.strip() == "systemd"


def test_gpu_facts_in_the_container_report_no_gpu_and_the_mounted_toolkit(host):
    result = host.ansible("dgxspark.vllm.gpu_facts", check=True)
    facts = result["ansible_facts"]["dgxspark_gpu"]
    assert result["changed"] is False
    assert facts["present"] is False
    assert "nvidia-smi not found" in facts["reason"]
    assert facts["cuda_toolkit"]["found"] is True
    assert facts["cuda_toolkit"]["version"] == "13.0"
