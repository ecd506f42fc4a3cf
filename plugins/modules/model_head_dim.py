#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dgxspark.vllm contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: model_head_dim
short_description: Read a model's attention head dim from its local config.json and warn when FA4 cannot serve it
version_added: 0.1.0
description:
  - Finds the model's C(config.json) in a local directory, or in the local Hugging Face cache
    (C(<hub>/models--<org>--<name>/snapshots/<commit>/config.json), the commit from C(refs/main) or O(revision)).
    Nothing is downloaded.
  - Where the module's Python has C(huggingface_hub), its own cache lookup answers first. The host's Python
    usually has not (C(huggingface_hub) lives in the vLLM venv), and then the module reads the same layout itself,
    falling back to the newest snapshot when the branch is not recorded.
  - The head dim is C(head_dim), else C(hidden_size / num_attention_heads), at the top level or in a nested
    language-model config (C(text_config), C(llm_config), C(language_config)).
  - Warns when it is above O(max_head_dim). The SM120 FA4 kernel supports head dims up to 128, so the FA4 shim
    has no effect for such a model (the Qwen3.5 family uses 256) and vLLM keeps FA2.
  - Read-only. Supports check mode and never reports changed.
options:
  model:
    description: A Hugging Face model id (C(org/name)) or the path of a model directory (or of its C(config.json)).
    type: str
    required: true
  revision:
    description: A branch or tag under C(refs/), or a commit hash. By default C(refs/main), else the newest snapshot.
    type: str
  hf_home:
    description: The Hugging Face home on the host. By default E(HF_HUB_CACHE), E(HF_HOME) or C(~/.cache/huggingface).
    type: path
  max_head_dim:
    description: The largest head dim the FA4 path serves.
    type: int
    default: 128
  fail_on_missing:
    description: Fail when the config cannot be found or read, instead of returning RV(found=false) with a warning.
    type: bool
    default: false
  host:
    description:
      - The name the warnings and failures begin with. A module cannot know its inventory name, so pass
        C({{ inventory_hostname }}); by default the host's own hostname.
    type: str
author:
  - dgxspark.vllm maintainers (@dgxspark)
"""

EXAMPLES = r"""
- name: Check the served model's head dim
  dgxspark.vllm.model_head_dim:
    model: openai/gpt-oss-120b
    host: "{{ inventory_hostname }}"
  register: head

- name: Check a model directory
  dgxspark.vllm.model_head_dim:
    model: /srv/models/Qwen3.5-27B
    fail_on_missing: true
"""

RETURN = r"""
found:
  description: Whether a config.json was found and read.
  returned: always
  type: bool
config_path:
  description: The config.json read.
  returned: when found
  type: str
  sample: /root/.cache/huggingface/hub/models--openai--gpt-oss-120b/snapshots/b5c9.../config.json
head_dim:
  description: The attention head dim, or V(null) when the config does not tell it.
  returned: always
  type: int
  sample: 64
source:
  description: Where the head dim came from, or why it is unknown.
  returned: always
  type: str
  sample: head_dim
fa4_eligible:
  description: V(true) when head_dim <= O(max_head_dim); V(null) when unknown.
  returned: always
  type: bool
"""

import platform

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dgxspark.vllm.plugins.module_utils.model_config import (
    ModelConfigError,
    find_config,
    head_dim_from_config,
    load_config,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            model=dict(type="str", required=True),
            revision=dict(type="str"),
            hf_home=dict(type="path"),
            max_head_dim=dict(type="int", default=128),
            fail_on_missing=dict(type="bool", default=False),
            host=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    host = p["host"] or platform.node() or "this host"
    result = dict(changed=False, found=False, config_path=None, head_dim=None, source=None, fa4_eligible=None)
    try:
        path = find_config(p["model"], p["hf_home"], p["revision"])
        config = load_config(path)
    except ModelConfigError as exc:
        if p["fail_on_missing"]:
            module.fail_json(msg="%s: %s" % (host, exc), **result)
        result["source"] = str(exc)
        module.warn("%s: %s; the head dim was not checked" % (host, exc))
        module.exit_json(**result)
    head_dim, source = head_dim_from_config(config)
    result.update(found=True, config_path=path, head_dim=head_dim, source=source)
    if head_dim is None:
        module.warn("%s: model %s (%s): cannot tell the head dim: %s" % (host, p["model"], path, source))
    else:
        result["fa4_eligible"] = head_dim <= p["max_head_dim"]
        if not result["fa4_eligible"]:
            module.warn("%s: model %s has head_dim %d (%s) > %d: the FA4 SM120 kernel does not serve it, so the FA4 "
                        "shim has no effect and vLLM uses FA2 for it"
                        % (host, p["model"], head_dim, source, p["max_head_dim"]))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
