#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dgxspark.vllm contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gpu_facts
short_description: Read NVIDIA GPU and CUDA toolkit facts from nvidia-smi and nvcc
version_added: 0.1.0
description:
  - Runs C(nvidia-smi --query-gpu=... --format=csv,noheader,nounits) and returns one entry per GPU
    with its name, UUID, compute capability, the matching E(TORCH_CUDA_ARCH_LIST) value, memory and driver version.
  - Looks for C(nvcc) on E(PATH) and in O(cuda_home)C(/bin) and returns the CUDA toolkit version.
  - A host without C(nvidia-smi) is not an error; the facts say there is no GPU and why.
  - Neither is a failing C(nvidia-smi) (a driver that is not loaded, or does not match the kernel module). The facts
    then say there is no usable GPU, C(reason) quotes nvidia-smi and its exit code, and C(nvidia_smi_rc) is set.
    The caller decides (the preflight role fails, or warns with C(dgxspark_require_gpu=false)).
    Output that cannot be parsed is still an error, quoting the line.
  - Read-only. Supports check mode and never reports changed.
options:
  cuda_home:
    description: CUDA toolkit root searched for C(bin/nvcc) when C(nvcc) is not on E(PATH).
    type: path
    default: /usr/local/cuda
  nvidia_smi_path:
    description: Explicit path of C(nvidia-smi). By default it is looked up on E(PATH) and in C(/usr/bin).
    type: path
author:
  - dgxspark.vllm maintainers (@dgxspark)
notes:
  - Memory is V(null) where nvidia-smi prints C([N/A]) or C([Not Supported]), as on GB10's unified memory.
"""

EXAMPLES = r"""
- name: Read GPU facts
  dgxspark.vllm.gpu_facts:

- name: Show the compute capability of the first GPU
  ansible.builtin.debug:
    msg: "{{ ansible_facts.dgxspark_gpu.gpus[0].compute_capability }}"
  when: ansible_facts.dgxspark_gpu.present
"""

RETURN = r"""
ansible_facts:
  description: Facts added under C(dgxspark_gpu).
  returned: always
  type: dict
  contains:
    dgxspark_gpu:
      description: GPU and toolkit facts.
      returned: always
      type: dict
      sample:
        present: true
        reason: null
        count: 1
        compute_capabilities: ["12.1"]
        torch_cuda_arch_list: "12.1a"
        driver_version: "580.95.05"
        nvidia_smi: /usr/bin/nvidia-smi
        nvidia_smi_rc: 0
        gpus:
          - index: 0
            name: NVIDIA GB10
            uuid: GPU-0b7c0a8e-0000-0000-0000-000000000000
            compute_capability: "12.1"
            compute_capability_major: 12
            compute_capability_minor: 1
            torch_cuda_arch: "12.1a"
            memory_total_mib: null
            driver_version: "580.95.05"
        cuda_toolkit:
          found: true
          version: "13.0"
          build: "13.0.88"
          nvcc: /usr/local/cuda/bin/nvcc
          cuda_home: /usr/local/cuda
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dgxspark.vllm.plugins.module_utils.gpu import (
    GpuParseError,
    parse_gpu_query,
    driver_failure_reason,
    parse_nvcc_version,
    query_args,
    summarize,
)


def find_toolkit(module, cuda_home):
    nvcc = module.get_bin_path("nvcc", required=False, opt_dirs=[os.path.join(cuda_home, "bin")])
    if not nvcc:
        return {"found": False, "version": None, "build": None, "nvcc": None, "cuda_home": None,
                "reason": "nvcc not found on PATH or in %s/bin" % cuda_home}
    rc, out, err = module.run_command([nvcc, "--version"], environ_update={"LC_ALL": "C"})
    if rc != 0:
        module.fail_json(msg="%s --version failed (rc=%d): %s" % (nvcc, rc, (err or out).strip()))
    try:
        parsed = parse_nvcc_version(out)
    except GpuParseError as exc:
        module.fail_json(msg="%s: %s" % (nvcc, exc))
    real_home = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    return {"found": True, "version": parsed["version"], "build": parsed["build"], "nvcc": nvcc,
            "cuda_home": real_home, "reason": None}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            cuda_home=dict(type="path", default="/usr/local/cuda"),
            nvidia_smi_path=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    smi = module.params["nvidia_smi_path"]
    if smi and not os.access(smi, os.X_OK):
        module.fail_json(msg="nvidia_smi_path=%s is not an executable file" % smi)
    if not smi:
        smi = module.get_bin_path("nvidia-smi", required=False, opt_dirs=["/usr/bin", "/usr/local/nvidia/bin"])

    if not smi:
        facts = summarize([], reason="nvidia-smi not found on PATH: no NVIDIA driver installed, so no NVIDIA GPU")
    else:
        rc, out, err = module.run_command([smi] + query_args(), environ_update={"LC_ALL": "C"})
        if rc != 0:
            facts = summarize([], reason=driver_failure_reason(smi, rc, out, err))
        else:
            try:
                gpus = parse_gpu_query(out)
            except GpuParseError as exc:
                module.fail_json(msg=str(exc), stdout=out)
            facts = summarize(gpus, reason="nvidia-smi found no GPU" if not gpus else None)
        facts["nvidia_smi"] = smi
        facts["nvidia_smi_rc"] = rc

    facts["cuda_toolkit"] = find_toolkit(module, module.params["cuda_home"])
    module.exit_json(changed=False, ansible_facts={"dgxspark_gpu": facts})


if __name__ == "__main__":
    main()
