#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dgxspark.vllm contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fa2_library
short_description: Install, back up and restore vLLM's FA2 library atomically
version_added: 0.1.0
description:
  - Manages C(vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so) in a vLLM venv and the files kept beside it,
    vLLM's own library as C(<lib>.stock), the manifest C(<lib>.dgxspark.json) of an installed build,
    and saved copies in named slots C(<lib>.<slot>) with C(<lib>.<slot>.json).
  - Every write goes to a temporary file in the same directory and is then renamed, so the library's
    name always holds a complete library. An install first writes its manifest as a journal
    (C(<lib>.dgxspark.json.pending)); a run interrupted between the two renames is completed or undone
    by the next call.
  - O(state=installed) copies O(src) in after checking its sha256 against O(sha256). The library it replaces
    goes to slot O(backup_slot), and, when it is vLLM's own (no manifest describes it), to C(<lib>.stock).
  - O(state=stock) puts vLLM's library back from C(<lib>.stock) and removes the manifest, the stock backup
    and the C(previous) and C(rollback) slots. When pip has since put a newer vLLM library in place, that one is kept.
  - O(state=snapshot) saves the library in place (and its manifest) to O(slot); O(state=restored) puts it back.
  - M(dgxspark.vllm.fa2_library_info) reports the state of these files without changing anything.
  - Supports check mode. Reports changed only when a file was (or would be) written or removed.
options:
  path:
    description: The library, C(<site-packages>/vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so).
    type: path
    required: true
  state:
    description: What to do, see the description.
    type: str
    choices: [installed, stock, snapshot, restored]
    required: true
  src:
    description: The new library on the host (O(state=installed)).
    type: path
  sha256:
    description: Expected sha256 of O(src) (O(state=installed)); checked before and after the copy.
    type: str
  manifest:
    description: Manifest to write beside the installed library (O(state=installed)); C(sha256) is added.
    type: dict
  backup_slot:
    description: Slot that receives the replaced library (O(state=installed)); empty for none.
    type: str
    default: previous
  slot:
    description: Slot name for O(state=snapshot) and O(state=restored).
    type: str
    default: rollback
  meta:
    description:
      - O(state=snapshot), data stored with the slot (such as the vLLM version).
      - O(state=restored), every key given must equal the stored value, else the module fails.
    type: dict
    default: {}
author:
  - dgxspark.vllm maintainers (@dgxspark)
"""

EXAMPLES = r"""
- name: Install a verified build
  dgxspark.vllm.fa2_library:
    path: /opt/vllm/venv/lib/python3.12/site-packages/vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so
    state: installed
    src: /var/lib/dgxspark/fa2_native/stage/vllm_flash_attn/_vllm_fa2_C.abi3.so
    sha256: "{{ fa2_sha256 }}"
    manifest: "{{ fa2_manifest }}"

- name: Put vLLM's own library back
  dgxspark.vllm.fa2_library:
    path: /opt/vllm/venv/lib/python3.12/site-packages/vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so
    state: stock
"""

RETURN = r"""
actions:
  description: What was done (or would be done in check mode), one line each.
  returned: always
  type: list
  elements: str
sha256:
  description: sha256 of the library in place afterwards (before, in check mode).
  returned: success
  type: str
manifest:
  description: The manifest in place afterwards, V(null) when none (before, in check mode).
  returned: success
  type: dict
stock_sha256:
  description: sha256 of C(<lib>.stock) when it exists afterwards, else V(null).
  returned: success
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dgxspark.vllm.plugins.module_utils.fa2_library import (
    Library,
    LibraryError,
    sha256_file,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            state=dict(type="str", required=True, choices=["installed", "stock", "snapshot", "restored"]),
            src=dict(type="path"),
            sha256=dict(type="str"),
            manifest=dict(type="dict"),
            backup_slot=dict(type="str", default="previous"),
            slot=dict(type="str", default="rollback"),
            meta=dict(type="dict", default={}),
        ),
        required_if=[("state", "installed", ("src", "sha256", "manifest"))],
        supports_check_mode=True,
    )
    params = module.params
    for name in ("slot", "backup_slot"):
        value = params[name] or ""
        if value and (not value.replace("_", "").replace("-", "").isalnum() or value in ("stock",)):
            module.fail_json(msg="%s=%r: use letters, digits, '-' or '_' (and not 'stock')" % (name, value))
    lib = Library(params["path"], check_mode=module.check_mode)
    before = lib.current() if os.path.exists(params["path"]) else None
    try:
        if params["state"] == "installed":
            lib.install(params["src"], params["sha256"].lower(), params["manifest"], params["backup_slot"])
        elif params["state"] == "stock":
            lib.restore_stock()
        elif params["state"] == "snapshot":
            lib.recover()
            lib.save_slot(params["slot"], meta=params["meta"])
        else:
            lib.restore_slot(params["slot"], require_meta=params["meta"])
    except LibraryError as exc:
        module.fail_json(msg="%s: %s" % (params["path"], exc), actions=lib.actions)
    except OSError as exc:
        module.fail_json(msg="%s: %s (done so far: %s)" % (params["path"], exc, "; ".join(lib.actions) or "nothing"),
                         actions=lib.actions)

    after = lib.current() if not module.check_mode else (before or {"sha256": None, "manifest": None})
    result = dict(
        changed=bool(lib.actions),
        actions=lib.actions,
        sha256=after["sha256"],
        manifest=after["manifest"],
        stock_sha256=sha256_file(lib.stock) if os.path.isfile(lib.stock) else None,
    )
    if module._diff and lib.actions:
        result["diff"] = {
            "before_header": params["path"],
            "after_header": params["path"],
            "before": "sha256: %s\n" % ((before or {}).get("sha256")),
            "after": "sha256: %s\n%s\n" % (after["sha256"] if not module.check_mode else "(check mode)",
                                           "\n".join(lib.actions)),
        }
    module.exit_json(**result)


if __name__ == "__main__":
    main()
