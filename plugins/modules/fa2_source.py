#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dgxspark.vllm contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fa2_source
short_description: Work out which flash-attention source the installed vLLM needs (commit or local tree)
version_added: 0.1.0
description:
  - Answers "which vllm-project/flash-attention source does this vLLM pin?" without cloning anything.
  - In this order, the first that applies wins.
  - O(source_dir) set, a local tree such as the seed's C(<vllm>/.deps/vllm-flash-attn-src). Its identity is
    O(commit) when given, else a content hash of the tree (with C(CMakeLists.txt) as it will be after the
    M(dgxspark.vllm.fa2_patch) edit, so a patched and an unpatched copy agree).
  - O(commit) set, the user's commit.
  - A released vLLM found in the built-in table (FACTS.md section 2) or in O(commit_table).
  - A nightly vLLM (version C(...+g<sha>...)), whose pin was recorded in O(manifest_path) for this very vLLM
    version by an earlier run; else the C(GIT_TAG) read from vLLM's own C(vllm_flash_attn.cmake) at that
    commit, fetched from O(cmake_url) (a mirror can stand in for GitHub).
  - Anything else fails with a message that says to set O(commit).
  - Read-only. Supports check mode and never reports changed.
options:
  vllm_version:
    description: The installed vLLM version (from M(dgxspark.vllm.venv_facts)).
    type: str
    required: true
  commit:
    description: flash-attention commit to use; empty for the automatic choice.
    type: str
    default: ""
  source_dir:
    description: A local flash-attention source tree; empty to use a clone at the resolved commit.
    type: path
  commit_table:
    description: Extra vLLM version (V(0.33.1)) or series (V(0.34)) to commit entries; they win over the built-in table.
    type: dict
    default: {}
  cmake_url:
    description: URL of vLLM's C(cmake/external_projects/vllm_flash_attn.cmake); C({commit}) is replaced by the nightly's commit.
    type: str
    default: https://raw.githubusercontent.com/vllm-project/vllm/{commit}/cmake/external_projects/vllm_flash_attn.cmake
  manifest_path:
    description: The fa2_native manifest of the installed library, whose recorded pin is reused for the same nightly.
    type: path
  target_archs:
    description:
      - Target archs (V(12.1), V(8.0); a trailing V(a) is dropped), checked and returned normalised in RV(target_archs).
      - Each must be 8.0 or newer (FA2's minimum). Also used to fingerprint O(source_dir).
    type: list
    elements: str
    required: true
  ptx:
    description: Whether PTX is asked for (RV(fa2_archs)); also used to fingerprint O(source_dir).
    type: bool
    default: false
  cuda_version:
    description: nvcc version, used only to fingerprint O(source_dir).
    type: str
    default: "13.0"
  timeout:
    description: Seconds to wait for O(cmake_url).
    type: int
    default: 30
  validate_certs:
    description: Verify TLS certificates of O(cmake_url).
    type: bool
    default: true
  cuda_home:
    description:
      - CUDA toolkit root. When set, RV(cuda_driver) says which C(libcuda.so) the build will link against
        (CMake's C(CUDA::cuda_driver)); nothing is decided from it here.
    type: path
  cuda_driver_library:
    description: A C(libcuda.so) given by the user, reported in RV(cuda_driver) instead of searching.
    type: path
author:
  - dgxspark.vllm maintainers (@dgxspark)
"""

EXAMPLES = r"""
- name: Which flash-attention commit does the venv's vLLM pin?
  dgxspark.vllm.fa2_source:
    vllm_version: "{{ ansible_facts.dgxspark_venv.vllm_version }}"
  register: fa2_source
"""

RETURN = r"""
kind:
  description: Where the answer came from, V(local), V(user), V(table), V(manifest) or V(nightly).
  returned: success
  type: str
  sample: table
commit:
  description: The source identity used in the build key (a commit, or C(tree-<hash>) for an unnamed local tree).
  returned: success
  type: str
  sample: b273a02621d3c94bc747df67204f591b67f38fae
detail:
  description: One line saying how the answer was found.
  returned: success
  type: str
source_dir:
  description: O(source_dir) when set, else V(null).
  returned: success
  type: str
fingerprint:
  description: Content hash of O(source_dir) when it exists on the host, else V(null).
  returned: success
  type: str
git_head:
  description: The commit checked out in O(source_dir) when it is the top of a git work tree, else V(null).
  returned: success
  type: str
repository:
  description: The C(GIT_REPOSITORY) named by vLLM's cmake file (nightlies only), else V(null).
  returned: success
  type: str
target_archs:
  description: O(target_archs) normalised, unique and sorted by version.
  returned: success
  type: list
  elements: str
  sample: ["8.0", "12.1"]
fa2_archs:
  description: The FA2 arch list the build must configure (C(FA2_ARCHS:) of cmake), joined by C(;).
  returned: success
  type: str
  sample: "8.0;12.1"
cuda_driver:
  description:
    - The C(libcuda.so) to link against, found as CMake's FindCUDAToolkit looks (the toolkit's lib dirs, the
      NVIDIA driver's library from C(ldconfig -p) and the usual dirs, then the toolkit's C(stubs/) dirs), or
      O(cuda_driver_library). V(null) without O(cuda_home).
    - C(path) (V(null) when none was found), C(kind) (V(given), V(toolkit), V(driver) or V(stub)), C(exists)
      and C(searched) (the paths looked at).
  returned: success
  type: dict
  sample: {path: /usr/local/cuda/lib64/stubs/libcuda.so, kind: stub, exists: true, searched: []}
"""

import json
import os
import platform

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url

from ansible_collections.dgxspark.vllm.plugins.module_utils.fa2_source import (
    Fa2SourceError,
    commit_for_release,
    desired_fa2_list,
    find_cuda_driver_library,
    normalize_archs,
    parse_git_tag,
    parse_vllm_version,
    patch_cmakelists,
    tree_fingerprint,
)


def local_tree(module, result):
    params = module.params
    root = params["source_dir"]
    result["source_dir"] = root
    if not os.path.isdir(root):
        if params["commit"]:
            result.update(kind="local", commit=params["commit"],
                          detail="source_dir %s is not on this host; identity from commit=%s" % (root, params["commit"]))
            return
        module.fail_json(msg="source_dir=%s does not exist on this host (and no commit was given to name it)" % root)
    cmakelists = os.path.join(root, "CMakeLists.txt")
    if not os.path.isfile(cmakelists):
        module.fail_json(msg="source_dir=%s has no CMakeLists.txt; expected a vllm-project/flash-attention tree" % root)
    with open(cmakelists, newline="") as handle:
        text = handle.read()
    try:
        patched, _info = patch_cmakelists(text, params["target_archs"], params["cuda_version"], ptx=params["ptx"])
    except Fa2SourceError as exc:
        module.fail_json(msg="%s: %s" % (cmakelists, exc))
    result["fingerprint"] = tree_fingerprint(root, patched)
    git = module.get_bin_path("git", required=False)
    if git and os.path.exists(os.path.join(root, ".git")):
        rc, out, _err = module.run_command([git, "-C", root, "rev-parse", "HEAD"], environ_update={"LC_ALL": "C"})
        result["git_head"] = out.strip() if rc == 0 else None
    if params["commit"]:
        result.update(kind="local", commit=params["commit"], detail="local tree %s, named commit=%s" % (root, params["commit"]))
    else:
        result.update(kind="local", commit="tree-" + result["fingerprint"][:16],
                      detail="local tree %s (content hash %s)" % (root, result["fingerprint"][:16]))


def cuda_driver(module):
    """Which libcuda.so the build would link against (see find_cuda_driver_library)."""
    params = module.params
    if not params["cuda_home"]:
        return None
    ldconfig = module.get_bin_path("ldconfig", required=False, opt_dirs=["/sbin", "/usr/sbin"])
    listing = ""
    if ldconfig:
        rc, out, _err = module.run_command([ldconfig, "-p"], environ_update={"LC_ALL": "C"})
        listing = out if rc == 0 else ""
    return find_cuda_driver_library(params["cuda_home"], listing, platform.machine(), params["cuda_driver_library"] or "")


def recorded_pin(path, version):
    """The fa_commit an earlier run recorded for this exact vLLM version, or None."""
    if not path or not os.path.isfile(path):
        return None
    try:
        with open(path) as handle:
            manifest = json.load(handle)
    except (OSError, ValueError):
        return None
    key = manifest.get("key") or {}
    if key.get("vllm") == version and key.get("fa_commit") and manifest.get("source", {}).get("kind") in ("nightly", "manifest"):
        return key["fa_commit"]
    return None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            vllm_version=dict(type="str", required=True),
            commit=dict(type="str", default=""),
            source_dir=dict(type="path"),
            commit_table=dict(type="dict", default={}),
            cmake_url=dict(type="str",
                           default="https://raw.githubusercontent.com/vllm-project/vllm/{commit}"
                                   "/cmake/external_projects/vllm_flash_attn.cmake"),
            manifest_path=dict(type="path"),
            target_archs=dict(type="list", elements="str", required=True),
            ptx=dict(type="bool", default=False),
            cuda_version=dict(type="str", default="13.0"),
            timeout=dict(type="int", default=30),
            validate_certs=dict(type="bool", default=True),
            cuda_home=dict(type="path"),
            cuda_driver_library=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    result = dict(changed=False, kind=None, commit=None, detail=None, source_dir=None, fingerprint=None,
                  git_head=None, repository=None, cuda_driver=cuda_driver(module))
    try:
        targets = normalize_archs(params["target_archs"])
    except Fa2SourceError as exc:
        module.fail_json(msg="target_archs=%s: %s" % (params["target_archs"], exc))
    too_old = [arch for arch in targets if int(arch.split(".")[0]) < 8]
    if too_old:
        module.fail_json(msg="target_archs=%s: FA2 needs compute capability 8.0 or newer, got %s" % (
            params["target_archs"], ", ".join(too_old)))
    result["target_archs"] = targets
    result["fa2_archs"] = ";".join(desired_fa2_list(targets, params["ptx"]))
    if params["source_dir"]:
        local_tree(module, result)
        module.exit_json(**result)

    if params["commit"]:
        result.update(kind="user", commit=params["commit"], detail="commit given by the user")
        module.exit_json(**result)

    try:
        info = parse_vllm_version(params["vllm_version"])
        pinned = commit_for_release(params["vllm_version"], params["commit_table"])
    except Fa2SourceError as exc:
        module.fail_json(msg="vllm_version=%s: %s" % (params["vllm_version"], exc))
    if pinned and not info["nightly_commit"]:
        result.update(kind="table", commit=pinned, detail="vLLM %s pins flash-attention %s (table)" % (info["version"], pinned))
        module.exit_json(**result)

    if not info["nightly_commit"]:
        module.fail_json(msg=(
            "vLLM %s is not in the flash-attention pin table and is not a nightly (no +g<commit> in its version); "
            "set fa2_native_commit (the GIT_TAG of cmake/external_projects/vllm_flash_attn.cmake in that vLLM "
            "release) or add it to fa2_native_commit_table" % info["version"]))

    recorded = recorded_pin(params["manifest_path"], info["version"])
    if recorded:
        result.update(kind="manifest", commit=recorded,
                      detail="vLLM %s pins flash-attention %s (recorded in %s)" % (info["version"], recorded, params["manifest_path"]))
        module.exit_json(**result)

    url = params["cmake_url"].replace("{commit}", info["nightly_commit"])
    try:
        response = open_url(url, timeout=params["timeout"], validate_certs=params["validate_certs"])
        text = response.read().decode("utf-8", "replace")
    except Exception as exc:  # urllib raises several types; all mean "could not read the pin"
        module.fail_json(msg=(
            "cannot read vLLM's vllm_flash_attn.cmake for nightly %s from %s: %s; set fa2_native_commit, or "
            "point fa2_native_vllm_cmake_url at a reachable mirror" % (info["version"], url, exc)))
    try:
        tag = parse_git_tag(text)
    except Fa2SourceError as exc:
        module.fail_json(msg="%s (from %s): %s" % (info["version"], url, exc))
    result.update(kind="nightly", commit=tag["commit"], repository=tag["repository"],
                  detail="vLLM nightly %s (vLLM commit %s) pins flash-attention %s (%s)" % (
                      info["version"], info["nightly_commit"], tag["commit"], url))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
