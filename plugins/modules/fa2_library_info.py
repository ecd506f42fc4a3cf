#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dgxspark.vllm contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fa2_library_info
short_description: Report the state of vLLM's FA2 library and the files M(dgxspark.vllm.fa2_library) keeps beside it
version_added: 0.1.0
description:
  - Reads C(vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so) in a vLLM venv, the manifest C(<lib>.dgxspark.json) of a build
    that M(dgxspark.vllm.fa2_library) installed, vLLM's own library kept as C(<lib>.stock), and the journal
    C(<lib>.dgxspark.json.pending) of an interrupted install.
  - Read-only. Supports check mode and never reports changed. The fa2_native role decides with it whether a build
    is needed.
options:
  path:
    description: The library, C(<site-packages>/vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so).
    type: path
    required: true
author:
  - dgxspark.vllm maintainers (@dgxspark)
seealso:
  - module: dgxspark.vllm.fa2_library
"""

EXAMPLES = r"""
- name: Read the installed library and its manifest
  dgxspark.vllm.fa2_library_info:
    path: /opt/vllm/venv/lib/python3.12/site-packages/vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so
  register: fa2_installed

- name: Show whether our build is in place
  ansible.builtin.debug:
    msg: "{{ 'a native build is installed' if fa2_installed.ours else 'vLLM ships this library' }}"
"""

RETURN = r"""
exists:
  description: Whether the library exists.
  returned: always
  type: bool
sha256:
  description: sha256 of the library, V(null) when it does not exist.
  returned: always
  type: str
manifest:
  description: The manifest beside the library, V(null) when there is none.
  returned: always
  type: dict
ours:
  description: Whether the manifest describes the library in place, that is, a build installed by
    M(dgxspark.vllm.fa2_library) is in place.
  returned: always
  type: bool
stock_exists:
  description: Whether C(<lib>.stock) (vLLM's own library, kept at the first replacement) exists.
  returned: always
  type: bool
pending:
  description: Whether the journal of an interrupted install exists; the next change by M(dgxspark.vllm.fa2_library)
    completes or removes it.
  returned: always
  type: bool
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dgxspark.vllm.plugins.module_utils.fa2_library import Library, LibraryError


def main():
    module = AnsibleModule(argument_spec=dict(path=dict(type="path", required=True)), supports_check_mode=True)
    lib = Library(module.params["path"], check_mode=True)
    try:
        cur = lib.current()
    except LibraryError as exc:
        module.fail_json(msg="%s: %s" % (module.params["path"], exc))
    module.exit_json(changed=False, exists=cur["exists"], sha256=cur["sha256"], manifest=cur["manifest"],
                     ours=cur["ours"], stock_exists=os.path.isfile(lib.stock), pending=os.path.exists(lib.pending))


if __name__ == "__main__":
    main()
