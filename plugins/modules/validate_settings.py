#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dgxspark.vllm contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: validate_settings
short_description: Check the settings of a playbook and of every role it runs, at once, before anything changes
version_added: 0.1.0
description:
  - An action plugin. It runs on the controller and never touches the host.
  - For each role in O(roles), reads the role's C(meta/argument_specs.yml) (the entry point's options), its
    C(defaults/main.yml) and C(vars/main.yml), and works out each option's value as the role would see it
    (role defaults, then the host's variables, then the role's vars, then the C(vars) of its O(roles) entry, then extra vars).
  - Checks each value against its option as Ansible's role argument validation does (types, choices), and more
    strictly where Ansible converts a value for the check but the role then uses the value as given
    (a list or dict for a string, a string for a list or dict). A string for a list option is accepted only where
    the role normalises it (it defines C(__<option>) in C(vars/main.yml)), and then only V("") (no items) or a
    string without commas or blanks (one item). An option of C(type=path) must be an absolute path on the host.
  - Then, for the C(main) entry point and when every option passed, evaluates the role's C(tasks/settings.yml),
    the cross-checks of the role's settings. It holds assert tasks only (keys C(name), C(vars), C(when), C(loop),
    C(loop_control)). The role imports the same file as its first tasks, so a role used alone checks the same things.
  - A value that refers to something not defined yet (a fact gathered later in the run) is left to the role, with a
    warning.
  - O(playbook) adds a playbook's own settings, from C(playbooks/<name>.meta.yml) (C(argument_specs.main.options)).
  - Fails with one message, one line per problem, each naming the host, the variable and the value
    (values of C(no_log) options are hidden).
options:
  roles:
    description:
      - The roles whose settings are checked, in order. Each is a role name (this collection's short or full
        name, another collection's full name, or a role in a roles path) or a dict with C(name), C(entry_point)
        (default V(main)) and C(vars) (values the play gives the role, like C(include_role)'s C(vars)).
    type: list
    elements: raw
    default: []
  playbook:
    description: Name of a playbook of this collection (V(site), V(rollout), ...) whose C(.meta.yml) spec is checked too.
    type: str
    default: ""
  before_changes:
    description: >-
      Set where this task runs before any task of the run has changed a host (the collection's playbooks run it in
      their first play); the failure message then says that nothing was changed.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: It reads settings on the controller and changes nothing, in check mode or not.
  diff_mode:
    support: none
    description: There is nothing to show a difference of.
author:
  - dgxspark.vllm maintainers (@dgxspark)
"""

EXAMPLES = r"""
- name: Check the settings of the roles this play runs
  dgxspark.vllm.validate_settings:
    roles:
      - uv
      - vllm_venv
      - name: fa2_native
        vars:
          fa2_native_state: absent
    playbook: site
    before_changes: true
"""

RETURN = r"""
checked:
  description: The playbook and roles whose settings were checked.
  returned: always
  type: list
  elements: str
  sample: [playbook site, uv, vllm_venv, fa2_native]
msg:
  description: On failure, one line per problem, each naming the host, the variable and the value.
  returned: always
  type: str
  sample: "spark-01: fa2_native_state=\"sideways\": value of fa2_native_state must be one of: present, absent, got: sideways (fa2_native settings)"
"""
