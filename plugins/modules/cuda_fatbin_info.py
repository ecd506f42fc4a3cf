#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dgxspark.vllm contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cuda_fatbin_info
short_description: List the SASS and PTX targets (and kernels) embedded in a CUDA ELF file
version_added: 0.1.0
description:
  - Reads the CUDA fat binary of an ELF file (a shared object such as C(_vllm_fa2_C.abi3.so), an executable or an
    object file) and reports, per embedded entry, whether it is SASS (a cubin for one SM, run as is) or PTX
    (compiled by the driver at load time), and for which arch.
  - Also reports which kernels each entry holds, so a library that lacks native code for some kernels shows up.
  - Uses C(cuobjdump) when it is found (O(method=auto)), else a built-in reader written in Python that needs no
    NVIDIA tool. Both read the executable fatbin (section C(.nv_fatbin)), or the relocatable one
    (C(__nv_relfatbin)) when a file has only that, as C(cuobjdump) does by default.
  - With O(target_archs) it also checks the file against those archs and returns the problems found
    (a target with no SASS; PTX that was not allowed). It does not fail on them; the caller decides.
  - Read-only. Supports check mode and never reports changed.
options:
  path:
    description: The ELF file to read.
    type: path
    required: true
  method:
    description:
      - V(cuobjdump) runs C(cuobjdump --list-elf --list-ptx) (and C(--dump-elf-symbols --dump-ptx) for kernel names).
      - V(python) uses the built-in reader.
      - V(auto) uses C(cuobjdump) when it is found, else the built-in reader.
    type: str
    choices: [auto, cuobjdump, python]
    default: auto
  cuobjdump:
    description:
      - Path of C(cuobjdump). By default it is looked up on E(PATH) and in O(cuda_home)C(/bin).
      - C(cuobjdump) also comes on PyPI as C(nvidia-cuda-cuobjdump) (C(nvidia/cu13/bin/cuobjdump) in the package).
    type: path
  cuda_home:
    description: CUDA toolkit root searched for C(bin/cuobjdump) when it is not on E(PATH).
    type: path
    default: /usr/local/cuda
  kernels:
    description:
      - Also read the kernel names of each entry. Turn off to save time on very large libraries.
    type: bool
    default: true
  target_archs:
    description:
      - Archs the file must carry SASS for, as a list or a string in E(TORCH_CUDA_ARCH_LIST) style
        (V(12.1), V(12.1a), V(8.0+PTX), V(sm_121)). V(12.1) and V(12.1a) are both met by C(sm_121) or C(sm_121a) SASS.
      - When set, RV(problems) and RV(summary) are computed for these archs.
    type: raw
  allow_ptx:
    description:
      - Whether PTX in the file is acceptable when O(target_archs) is set. A target written V(8.0+PTX) allows
        PTX for that arch alone.
    type: bool
    default: false
author:
  - dgxspark.vllm maintainers (@dgxspark)
notes:
  - The built-in reader reads the kind and arch of every entry from the fatbin headers. Kernel names need the
    payload, which may be compressed. LZ4 is decoded in Python. Zstandard (nvcc's default for PTX) needs a
    Zstandard module in the target's Python (C(compression.zstd) from Python 3.14, C(backports.zstd) or
    C(zstandard)); without one those entries are listed with RV(entries[].kernels=null), RV(kernels_complete=false)
    and a note saying so.
  - cuobjdump lists a family-specific cubin (C(sm_120f)) as C(sm_120); the built-in reader does the same, so both
    methods return the same arch names. Family-specific PTX keeps its C(f).
  - NVVM IR entries (from C(-dlto)) are not listed, as C(cuobjdump --list-elf/--list-ptx) does not list them.
"""

EXAMPLES = r"""
- name: Read the FA2 library's embedded code
  dgxspark.vllm.cuda_fatbin_info:
    path: "{{ site_packages }}/vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so"
  register: fa2_code

- name: Fail unless the library has native sm_121 code and no PTX
  dgxspark.vllm.cuda_fatbin_info:
    path: /opt/vllm/build/_vllm_fa2_C.abi3.so
    target_archs: "12.1a"
    allow_ptx: false
  register: built_code
  failed_when: built_code.problems | length > 0

- name: Use the built-in reader even where cuobjdump is installed
  dgxspark.vllm.cuda_fatbin_info:
    path: /opt/vllm/venv/lib/python3.12/site-packages/torch/lib/libtorch_cuda.so
    method: python
    kernels: false

- name: Say what the stock library offers an SM12x GPU
  ansible.builtin.debug:
    msg: "stock library: {{ fa2_code.summary }}"
"""

RETURN = r"""
method:
  description: How the file was read.
  returned: always
  type: str
  choices: [cuobjdump, python]
  sample: cuobjdump
cuobjdump:
  description: The C(cuobjdump) used, or V(null) with O(method=python) or when none was found.
  returned: always
  type: str
  sample: /usr/local/cuda/bin/cuobjdump
sass_archs:
  description: Archs with SASS (cubins), sorted as strings.
  returned: always
  type: list
  elements: str
  sample: ["sm_121", "sm_80"]
ptx_archs:
  description: Archs with PTX, sorted as strings (C(sm_80) is C(compute_80) PTX).
  returned: always
  type: list
  elements: str
  sample: ["sm_80"]
counts:
  description: Number of SASS and PTX entries.
  returned: always
  type: dict
  sample: {sass: 2, ptx: 1}
entries:
  description: The embedded entries in file order, named as C(cuobjdump) names them.
  returned: always
  type: list
  elements: dict
  contains:
    kind:
      description: V(sass) (a cubin) or V(ptx).
      returned: always
      type: str
    arch:
      description: The target, for example V(sm_121).
      returned: always
      type: str
    name:
      description: The entry's name as C(cuobjdump) lists it.
      returned: always
      type: str
    kernels:
      description: The kernel names of the entry, or V(null) where they could not be read.
      returned: always
      type: list
      elements: str
    container:
      description: Index of the fatbin container that holds the entry.
      returned: with the built-in reader
      type: int
    compression:
      description: V(null), V(lz4) or V(zstd).
      returned: with the built-in reader
      type: str
    size:
      description: Uncompressed size in bytes.
      returned: with the built-in reader
      type: int
    stored_size:
      description: Size in the file, in bytes.
      returned: with the built-in reader
      type: int
  sample:
    - {kind: sass, arch: sm_80, name: _vllm_fa2_C.abi3.1.sm_80.cubin, kernels: ["_Z7add_onePfi"]}
    - {kind: ptx, arch: sm_80, name: _vllm_fa2_C.abi3.1.sm_80.ptx, kernels: ["_Z7add_onePfi"]}
kernels:
  description: One row per kernel with the archs it has SASS and PTX for, sorted by name.
  returned: always
  type: list
  elements: dict
  sample:
    - {name: "_Z7add_onePfi", sass: ["sm_80"], ptx: ["sm_80"]}
kernels_complete:
  description: Whether the kernel names of every entry were read (false with O(kernels=false)).
  returned: always
  type: bool
  sample: true
summary:
  description: One line for humans on what the file offers O(target_archs), or the SM12x family when unset.
  returned: always
  type: str
  sample: "PTX-only for SM12x (sm_80 SASS + compute_80 PTX; the driver JIT-compiles)"
problems:
  description: What is wrong for O(target_archs) (empty when all is well, or when O(target_archs) is unset).
  returned: always
  type: list
  elements: str
  sample: ["no SASS for sm_121 (target 12.1a); SASS present: sm_80"]
section:
  description: The ELF section read (C(.nv_fatbin) or C(__nv_relfatbin)), or C((whole file)) for a bare fatbin file.
  returned: with the built-in reader
  type: str
  sample: .nv_fatbin
elf_machine:
  description: The host architecture of the ELF file (V(null) for a bare fatbin file).
  returned: with the built-in reader
  type: str
  sample: aarch64
notes:
  description: What could not be read, and why (compressed payloads, relocatable code, skipped NVVM IR).
  returned: always
  type: list
  elements: str
  sample: ["cuobjdump not found on PATH or in /usr/local/cuda/bin: used the built-in reader"]
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dgxspark.vllm.plugins.module_utils.fatbin import (
    CUOBJDUMP_LIST_ARGS,
    FatbinError,
    check_targets,
    cuobjdump_kernel_blocks,
    describe,
    merge_cuobjdump,
    parse_cuobjdump_list,
    parse_targets,
    read_fatbin,
    summarize,
)


def find_cuobjdump(module):
    """The cuobjdump to use (or None) and, when none, why."""
    explicit = module.params["cuobjdump"]
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            module.fail_json(msg="cuobjdump=%s is not an executable file" % explicit)
        return explicit, None
    cuda_bin = os.path.join(module.params["cuda_home"], "bin")
    found = module.get_bin_path("cuobjdump", required=False, opt_dirs=[cuda_bin])
    return found, None if found else "cuobjdump not found on PATH or in %s" % cuda_bin


def read_with_cuobjdump(module, cuobjdump, path, kernels):
    rc, out, err = module.run_command([cuobjdump] + list(CUOBJDUMP_LIST_ARGS) + [path],
                                      environ_update={"LC_ALL": "C"})
    if rc != 0:
        message = " ".join((err.strip() + " " + out.strip()).split()) or "no message"
        module.fail_json(msg="%s %s %s failed (rc=%d): %s" % (cuobjdump, " ".join(CUOBJDUMP_LIST_ARGS), path, rc, message),
                         rc=rc, stdout=out, stderr=err)
    try:
        entries = parse_cuobjdump_list(out)
    except FatbinError as exc:
        module.fail_json(msg="%s: %s" % (path, exc), stdout=out)
    notes = []
    if kernels and entries:
        blocks, error = cuobjdump_kernel_blocks(cuobjdump, path)
        if error:
            notes.append("kernel names not read: cuobjdump --dump-elf-symbols --dump-ptx failed: %s" % error)
        else:
            notes.extend(merge_cuobjdump(entries, blocks))
    return summarize(entries, method="cuobjdump", kernels_read=kernels, notes=notes)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            method=dict(type="str", default="auto", choices=["auto", "cuobjdump", "python"]),
            cuobjdump=dict(type="path"),
            cuda_home=dict(type="path", default="/usr/local/cuda"),
            kernels=dict(type="bool", default=True),
            target_archs=dict(type="raw"),
            allow_ptx=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    path = module.params["path"]
    method = module.params["method"]
    kernels = module.params["kernels"]
    targets = module.params["target_archs"]
    try:
        parse_targets(targets)
    except ValueError as exc:
        module.fail_json(msg="target_archs: %s" % exc)
    if not os.path.exists(path):
        module.fail_json(msg="path=%s does not exist" % path)
    if not os.path.isfile(path):
        module.fail_json(msg="path=%s is not a regular file" % path)

    cuobjdump, why_not = (None, None) if method == "python" else find_cuobjdump(module)
    if method == "cuobjdump" and not cuobjdump:
        module.fail_json(msg="method=cuobjdump but %s; set the cuobjdump option or use method=python" % why_not)

    if cuobjdump:
        info = read_with_cuobjdump(module, cuobjdump, path, kernels)
    else:
        try:
            info = read_fatbin(path, kernels=kernels)
        except FatbinError as exc:
            module.fail_json(msg=str(exc))
        if why_not:
            info["notes"].insert(0, "%s: used the built-in reader" % why_not)

    info["cuobjdump"] = cuobjdump
    info["summary"] = describe(info, targets)
    info["problems"] = check_targets(info, targets, module.params["allow_ptx"]) if targets else []
    module.exit_json(changed=False, **info)


if __name__ == "__main__":
    main()
