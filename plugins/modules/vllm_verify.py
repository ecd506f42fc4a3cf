#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dgxspark.vllm contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: vllm_verify
short_description: Check that vLLM in a venv picks the SM120 FA4 path (and nothing else changed)
version_added: 0.1.0
description:
  - Runs the venv's own Python once, imports the real vLLM modules there (with the FA4 shim loaded by its
    C(.pth) file, as a server would) and reports the GPU compute capability, the vLLM version, whether the
    shim's import hook is installed, C(FA4_AVAILABLE), C(_is_fa4_supported()), C(get_flash_attn_version) for
    head sizes 128 and 256, the qualname of C(_flash_attn_fwd) and the archs of the FA2 library.
  - Calls C(get_flash_attn_version) with every parameter of the signature that the installed vLLM declares
    (read from its source), and once with each set of keywords that vLLM's own callers pass (found in the
    installed sources). A wrapper with a fixed parameter list, as in the upstream recipe, fails here with
    its C(TypeError) on vLLM 0.29 and later, where it would break every server.
  - "On an SM12x GPU it expects: C(FA4_AVAILABLE) true, C(_is_fa4_supported()) = C((True, None)), version 4
    for head size 128 and 2 for 256, and the shim's dispatch function as C(_flash_attn_fwd)."
  - On another GPU it expects vLLM's own answers (the shim must change nothing there). Without a GPU it checks
    what can be checked without one - the hook is installed, the three names are patched, the arguments pass
    through - and reports the rest.
  - "Without libcuda (a host with no NVIDIA driver, or CPU-only torch) vLLM's C(_vllm_fa2_C) extension cannot
    load and C(vllm.vllm_flash_attn) refuses to import. Only then the probe registers an empty stand-in module
    under that name, and says so in RV(report.stand_ins)."
  - Read-only. Supports check mode and never reports changed.
options:
  venv_path:
    description: Root of the vLLM virtual environment (the directory holding C(bin/python)).
    type: path
    required: true
  fail_on_mismatch:
    description: Fail when a check does not hold. When V(false) the module returns RV(passed) and RV(problems) only.
    type: bool
    default: true
  expect_shim:
    description:
      - V(true) expects the FA4 shim to be installed and active.
      - V(false) expects no hook and vLLM's own functions (after C(fa4_shim_state=absent)).
    type: bool
    default: true
  expect_fwd_qualname:
    description: The qualname that C(cute.interface._flash_attn_fwd) must have when the shim is active.
    type: str
    default: "_patch_cute_iface.<locals>._dispatch"
  expect_fa2_native:
    description: Also require native sm_12x SASS in the FA2 library (what the C(fa2_native) role builds).
    type: bool
    default: false
  assume_capability:
    description:
      - A test aid, not for production checks. Makes vLLM's platform report this compute capability
        (for example V("12.1")) inside the probe, so the SM12x decisions can be checked on a machine
        without such a GPU. The stand-in is listed in RV(report.stand_ins).
      - When C(vllm.config) cannot be imported in such a run (a venv installed without vLLM's dependencies),
        a stand-in whose C(get_current_vllm_config_or_none()) returns V(None) is used, and listed too.
    type: str
  environment:
    description: Extra environment variables for the probe, for example C(FA4_SM120_SHIM=0).
    type: dict
    default: {}
  timeout:
    description: Seconds the probe may run (it imports torch and vLLM).
    type: int
    default: 300
author:
  - dgxspark.vllm maintainers (@dgxspark)
notes:
  - The FA2 library's archs come from the C(fatbin) module_utils of the C(cuda_fatbin_info) module. Without it
    RV(report.fa2_library.available) is V(false).
"""

EXAMPLES = r"""
- name: Verify the FA4 SM120 path of the vLLM venv
  dgxspark.vllm.vllm_verify:
    venv_path: /opt/vllm/venv

- name: Verify that the shim is gone
  dgxspark.vllm.vllm_verify:
    venv_path: /opt/vllm/venv
    expect_shim: false

- name: Test aid on a machine without an SM12x GPU - check the SM12x decisions anyway
  dgxspark.vllm.vllm_verify:
    venv_path: /opt/vllm/venv
    assume_capability: "12.1"
"""

RETURN = r"""
passed:
  description: Every check held.
  returned: always
  type: bool
problems:
  description: "One line per failed check, in the form C(<check>: expected <x>, got <y>)."
  returned: always
  type: list
  elements: str
  sample:
    - "get_flash_attn_version(requires_alibi=False, ...) accepted: expected 'no error', got
      \"TypeError: patched() got an unexpected keyword argument 'requires_softcap'\""
checks:
  description: Every check made, with C(check), C(expected), C(seen) and C(ok).
  returned: always
  type: list
  elements: dict
report:
  description: What the probe saw.
  returned: always
  type: dict
  contains:
    fa2_library:
      description: The archs of vLLM's FA2 library (C(_vllm_fa2_C.abi3.so)).
      returned: always
      type: dict
      contains:
        available:
          description: Whether the library's archs could be read; when V(false), RV(report.fa2_library.reason) says why.
          returned: always
          type: bool
        path:
          description: The library the installed vLLM loads, or V(null) when it has none.
          returned: always
          type: str
        sass_archs:
          description: Archs with SASS, or V(null) when not available.
          returned: always
          type: list
          elements: str
        ptx_archs:
          description: Archs with PTX, or V(null) when not available.
          returned: always
          type: list
          elements: str
        native:
          description: Whether there is SASS for the GPU's capability, or V(null) when that cannot be told.
          returned: always
          type: bool
        reason:
          description: Why the archs are not available, or V(null).
          returned: always
          type: str
    stand_ins:
      description: The stand-ins the probe registered (see O(assume_capability)), one line each; empty on a real run.
      returned: always
      type: list
      elements: str
  sample:
    capability: "12.1"
    mode: sm12x
    vllm_version: "0.33.0"
    hook_installed: true
    fa4_available: true
    is_fa4_supported: [true, null]
    fa_version_hd128: 4
    fa_version_hd256: 2
    flash_attn_fwd_qualname: "_patch_cute_iface.<locals>._dispatch"
    installed_signature: [requires_alibi, head_size, head_size_v, has_sinks, requires_softcap, kv_cache_block_size,
                          supports_fa4_hd256]
    shim: {loaded: true, enabled: true, kernel_dir: /opt/vllm/kernels/flash-attn-4-sm120/6011.../build/torch-cuda,
           kernel_loaded: true, kernel_error: null}
    fa2_library: {available: true, path: ".../_vllm_fa2_C.abi3.so", sass_archs: [sm_121, sm_80], ptx_archs: [],
                  native: true}
    stand_ins: []
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dgxspark.vllm.plugins.module_utils.vllm_probe import (
    DEFAULT_FWD_QUALNAME,
    PROBE,
    fa2_native,
    judge,
    parse_output,
    probe_args,
    problems,
    summarize,
)

try:
    from ansible_collections.dgxspark.vllm.plugins.module_utils import fatbin
except ImportError:  # the cuda_fatbin_info module_utils has not landed in this checkout
    fatbin = None


def fa2_library(path, capability):
    info = {"available": False, "path": path, "sass_archs": None, "ptx_archs": None, "native": None, "reason": None}
    if not path:
        info["reason"] = "vLLM has no _vllm_fa2_C library"
    elif fatbin is None:
        info["reason"] = "the fatbin reader (module_utils/fatbin.py) is not part of this collection build"
    else:
        try:
            data = fatbin.read_fatbin(path, kernels=False)
        except Exception as exc:  # a reader error is reported, the other checks still count
            info["reason"] = "cannot read %s: %s" % (path, exc)
        else:
            info.update(available=True, sass_archs=data["sass_archs"], ptx_archs=data["ptx_archs"],
                        native=fa2_native(data["sass_archs"], capability))
    return info


def main():
    module = AnsibleModule(
        argument_spec=dict(
            venv_path=dict(type="path", required=True),
            fail_on_mismatch=dict(type="bool", default=True),
            expect_shim=dict(type="bool", default=True),
            expect_fwd_qualname=dict(type="str", default=DEFAULT_FWD_QUALNAME),
            expect_fa2_native=dict(type="bool", default=False),
            assume_capability=dict(type="str"),
            environment=dict(type="dict", default={}),
            timeout=dict(type="int", default=300),
        ),
        supports_check_mode=True,
    )
    params = module.params
    venv = params["venv_path"]
    python = os.path.join(venv, "bin", "python")
    if not os.access(python, os.X_OK):
        module.fail_json(msg="venv_path=%s: %s is not an executable Python; is the vLLM venv there?" % (venv, python))
    assumed = params["assume_capability"]
    if assumed is not None:
        parts = assumed.split(".")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            module.fail_json(msg="assume_capability=%r is not a compute capability of the form MAJOR.MINOR (e.g. 12.1)"
                             % assumed)

    # Read-only: no .pyc files written into the venv (they would belong to whoever runs this module).
    env = {"LC_ALL": "C", "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.update({str(k): str(v) for k, v in params["environment"].items()})
    argv = ["timeout", str(params["timeout"]), python, "-c", PROBE, probe_args(assumed)]
    if not module.get_bin_path("timeout"):
        argv = argv[2:]
    rc, out, err = module.run_command(argv, environ_update=env)
    raw = parse_output(out)
    if raw is None:
        module.fail_json(msg="the vLLM probe in %s failed (rc=%d) before it could report: %s"
                         % (venv, rc, (err or out).strip()[-3000:]), rc=rc, stdout=out[-3000:], stderr=err[-3000:])

    report = summarize(raw)
    report["fa2_library"] = fa2_library(raw.get("fa2_library_path"), report["capability"])
    checks = judge(raw, report, expect_shim=params["expect_shim"], expect_fwd_qualname=params["expect_fwd_qualname"],
                   expect_fa2_native=params["expect_fa2_native"])
    found = problems(checks)
    result = dict(changed=False, passed=not found, problems=found, checks=checks, report=report)
    if found and params["fail_on_mismatch"]:
        lines = ["vLLM in %s (capability %s, mode %s, vLLM %s) does not match the expectations:"
                 % (venv, report["capability"], report["mode"], report["vllm_version"])]
        lines.extend("  - " + p for p in found)
        if report["stand_ins"]:
            lines.append("  (stand-ins used: %s)" % "; ".join(report["stand_ins"]))
        module.fail_json(msg="\n".join(lines), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
