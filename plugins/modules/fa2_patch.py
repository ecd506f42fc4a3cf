#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dgxspark.vllm contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fa2_patch
short_description: Make flash-attention's FA2 arch list native for the given GPUs (CMakeLists.txt patch)
version_added: 0.1.0
description:
  - Edits the top-level C(CMakeLists.txt) of a vllm-project/flash-attention source tree so that the
    C(_vllm_fa2_C) library is compiled to SASS for O(target_archs) instead of sm_80 SASS + compute_80 PTX.
  - The file is read as CMake reads it - commands with arguments across lines, comments, quoted, unquoted
    and bracket arguments, and the C(if)/C(elseif)/C(else) branches CMake takes for O(cuda_version) - and
    only commands that run are read and edited.
  - Two edits, each only where needed. The target archs missing from C(CUDA_SUPPORTED_ARCHS) for the
    given CUDA version are added to the last C(set) or C(list(APPEND)) of it that runs before the target
    list meets it (in flash-attention, the C(list(APPEND ...)) of the C(CUDA >= 13.0) branch); otherwise the
    target would collapse to 12.0 and FA2 would get no arch at all. The FA2 list argument of the
    C(cuda_archs_loose_intersection(FA2_ARCHS ...)) call that runs gets the target list. Branches not
    taken, layout and comments are kept.
  - The module models FA's arch intersection. When the source already yields the wanted FA2 arch list
    (a second run, or upstream PR 196 that makes both changes) the file is left untouched.
  - Fails, naming the file and the line, when a command is missing, when the FA2 call runs in no branch,
    or when a value comes from a variable.
  - Supports check mode and diff mode. Reports changed only when the file was (or would be) rewritten.
options:
  path:
    description: Root of the flash-attention source tree (the directory holding C(CMakeLists.txt)).
    type: path
    required: true
  target_archs:
    description: Compute capabilities to compile for, like V(12.1) or V(8.0). A trailing V(a) is ignored.
    type: list
    elements: str
    required: true
  ptx:
    description: Also embed PTX for the highest target arch.
    type: bool
    default: false
  cuda_version:
    description: Version of the nvcc that will build the tree (V(13.0)); picks the C(CUDA_SUPPORTED_ARCHS) branch.
    type: str
    required: true
author:
  - dgxspark.vllm maintainers (@dgxspark)
"""

EXAMPLES = r"""
- name: Patch flash-attention for sm_121 only
  dgxspark.vllm.fa2_patch:
    path: /var/lib/dgxspark/fa2_native/src/flash-attention
    target_archs: ["12.1"]
    cuda_version: "13.0"
  register: fa2_patch

- name: The seed's two-arch list
  dgxspark.vllm.fa2_patch:
    path: /opt/vllm-src/.deps/vllm-flash-attn-src
    target_archs: ["8.0", "12.1"]
    cuda_version: "13.0"
"""

RETURN = r"""
status:
  description: V(patched) when the file needed edits, V(unchanged) when it already gives the wanted list.
  returned: success
  type: str
  sample: patched
fa2_archs:
  description: The FA2 arch list configure will print as C(FA2_ARCHS:) after the patch, joined by C(;).
  returned: success
  type: str
  sample: "12.1"
fa2_archs_before:
  description: The FA2 arch list the tree gave before the patch (empty string when it collapses to nothing).
  returned: success
  type: str
  sample: "8.0+PTX"
changes:
  description: One line per edit made (or that would be made in check mode).
  returned: success
  type: list
  elements: str
  sample:
    - "CUDA_SUPPORTED_ARCHS: added 12.1 (line 27, list(APPEND CUDA_SUPPORTED_ARCHS), in the branch
      if(${CMAKE_CUDA_COMPILER_VERSION} VERSION_GREATER_EQUAL 13.0))"
git_head:
  description: The commit checked out in the tree when it is the top of a git work tree, else V(null).
  returned: success
  type: str
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dgxspark.vllm.plugins.module_utils.fa2_source import (
    Fa2SourceError,
    patch_cmakelists,
)


def git_head(module, path):
    if not os.path.exists(os.path.join(path, ".git")):
        return None
    git = module.get_bin_path("git", required=False)
    if not git:
        return None
    rc, out, _err = module.run_command([git, "-C", path, "rev-parse", "HEAD"], environ_update={"LC_ALL": "C"})
    return out.strip() if rc == 0 else None


def write_atomic(path, text):
    """Replace path with text through a temporary file in the same directory, keeping its mode."""
    directory = os.path.dirname(path)
    mode = os.stat(path).st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".CMakeLists.txt.")
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            target_archs=dict(type="list", elements="str", required=True),
            ptx=dict(type="bool", default=False),
            cuda_version=dict(type="str", required=True),
        ),
        supports_check_mode=True,
    )
    root = module.params["path"]
    cmakelists = os.path.join(root, "CMakeLists.txt")
    if not os.path.isfile(cmakelists):
        module.fail_json(msg="path=%s: no CMakeLists.txt there; expected a vllm-project/flash-attention source tree" % root)
    with open(cmakelists, newline="") as handle:
        before = handle.read()
    try:
        after, info = patch_cmakelists(before, module.params["target_archs"], module.params["cuda_version"],
                                       ptx=module.params["ptx"])
    except Fa2SourceError as exc:
        module.fail_json(msg="%s: %s (target_archs=%s, cuda_version=%s)" % (
            cmakelists, exc, ",".join(module.params["target_archs"]), module.params["cuda_version"]))

    changed = after != before
    result = dict(
        changed=changed,
        status=info["status"],
        fa2_archs=";".join(info["after"]),
        fa2_archs_before=";".join(info["before"]),
        changes=info["changes"],
        git_head=git_head(module, root),
    )
    if module._diff and changed:
        result["diff"] = {"before_header": cmakelists, "after_header": cmakelists, "before": before, "after": after}
    if changed and not module.check_mode:
        write_atomic(cmakelists, after)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
