# -*- coding: utf-8 -*-
# Copyright: dgxspark.vllm contributors
# Apache License 2.0 (see LICENSE)
"""Action plugin of dgxspark.vllm.validate_settings (documentation: plugins/modules/validate_settings.py)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ansible import constants as C
from ansible.errors import AnsibleError, AnsibleUndefinedVariable
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.parameters import remove_values
from ansible.plugins.action import ActionBase
from ansible.utils.vars import load_extra_vars

from ansible_collections.dgxspark.vllm.plugins.module_utils.settings import check_value, show

try:  # the path of a role given by its fully qualified name (another collection's role)
    from ansible.utils.collection_loader._collection_finder import _get_collection_role_path
except ImportError:  # pragma: no cover - older or newer ansible-core without it
    _get_collection_role_path = None

COLLECTION = "dgxspark.vllm"
COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The keys a task of a role's tasks/settings.yml may have: the file holds assert tasks only.
ASSERT_ACTIONS = ("ansible.builtin.assert", "assert")
TASK_KEYS = frozenset(("name", "vars", "when", "loop", "loop_control", "tags") + ASSERT_ACTIONS)


class SettingsFileError(Exception):
    """A role's tasks/settings.yml holds something other than assert tasks."""


class ActionModule(ActionBase):
    """Check the settings of a playbook and of the roles it runs, all at once, without touching the host."""

    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp

        _validation, args = self.validate_argument_spec(argument_spec=dict(
            roles=dict(type="list", elements="raw", default=[]),
            playbook=dict(type="str", default=""),
            before_changes=dict(type="bool", default=False),
        ))
        host = task_vars.get("inventory_hostname", "?")
        extra_vars = self._extra_vars()
        problems, checked = [], []
        # Values that refer to something not defined yet (a fact gathered later in the run) cannot be checked now.
        self._unchecked = []
        # Problems with role defaults worked out from other settings: listed after those with the settings themselves.
        self._derived = []

        if args["playbook"]:
            name = args["playbook"]
            try:
                options = self._playbook_options(name)
            except AnsibleError as exc:
                problems.append("%s: %s" % (host, exc))
            else:
                problems.extend(self._check_options(host, "playbook " + name, options, {}, task_vars, {}, {}, extra_vars,
                                                    string_forms=()))
                checked.append("playbook " + name)

        for raw_entry in args["roles"]:
            try:
                name, entry_point, entry_vars = self._entry(raw_entry)
                role_path = self._role_path(name, task_vars)
            except AnsibleError as exc:
                problems.append("%s: %s" % (host, exc))
                continue
            problems.extend(self._check_role(host, name, role_path, entry_point, entry_vars, task_vars, extra_vars))
            checked.append(name if entry_point == "main" else "%s (%s)" % (name, entry_point))

        problems.extend(self._derived)
        result["changed"] = False
        if self._unchecked:
            result["warnings"] = ["%s: %s; the role checks it when it runs" % (host, why) for why in self._unchecked]
        if problems:
            result["failed"] = True
            lines = problems + ([
                "Nothing on %s was changed: the settings are checked in the first play, before any task changes a host."
                % host] if args["before_changes"] else [])
            result["msg"] = "\n".join(lines)
        else:
            result["checked"] = checked
            result["msg"] = "settings checked: %s" % ", ".join(checked)
        return result

    # Where the specs and checks come from.

    def _extra_vars(self):
        manager = self._task.get_variable_manager() if hasattr(self._task, "get_variable_manager") else None
        if manager is not None:
            return manager.extra_vars
        return load_extra_vars(self._loader)

    @staticmethod
    def _entry(raw):
        """(name, entry point, vars) of one item of roles: a role name or {name, entry_point, vars}."""
        if isinstance(raw, str):
            return raw, "main", {}
        if isinstance(raw, Mapping) and isinstance(raw.get("name"), str):
            unknown = set(raw) - {"name", "entry_point", "vars"}
            if unknown:
                raise AnsibleError("roles item %s has unknown keys %s; expected name, entry_point and vars"
                                   % (show(raw), ", ".join(sorted(unknown))))
            entry_vars = raw.get("vars") or {}
            if not isinstance(entry_vars, Mapping):
                raise AnsibleError("roles item %s: vars must be a dict" % show(raw))
            return raw["name"], raw.get("entry_point") or "main", dict(entry_vars)
        raise AnsibleError("roles item %s is neither a role name nor a dict with a name" % show(raw))

    def _role_path(self, name, task_vars):
        """The directory of a role: this collection's (short or full name), another collection's, or a roles path's."""
        short = name[len(COLLECTION) + 1:] if name.startswith(COLLECTION + ".") else name
        own = os.path.join(COLLECTION_ROOT, "roles", short)
        if "." not in short and os.path.isdir(own):
            return own
        if "." in name and _get_collection_role_path is not None:
            found = _get_collection_role_path(name)
            if found:
                return found[1]
        searched = [os.path.join(task_vars.get("playbook_dir", ""), "roles")] + list(C.DEFAULT_ROLES_PATH or [])
        for base in searched:
            path = os.path.join(base, name)
            if os.path.isdir(path):
                return path
        raise AnsibleError("role %s not found (looked in %s and %s)"
                           % (name, os.path.join(COLLECTION_ROOT, "roles"), ":".join(searched)))

    def _load(self, path):
        if not os.path.isfile(path):
            return None
        # unsafe: no deep copy of the cached data (it is read, never changed, here).
        return self._loader.load_from_file(path, unsafe=True, trusted_as_template=True)

    def _load_role_yaml(self, role_path, subdir, main="main"):
        for ext in (".yml", ".yaml"):
            data = self._load(os.path.join(role_path, subdir, main + ext))
            if data is not None:
                return data
        return None

    def _playbook_options(self, name):
        path = name if os.path.isabs(name) else os.path.join(COLLECTION_ROOT, "playbooks", name + ".meta.yml")
        data = self._load(path)
        if not isinstance(data, Mapping):
            raise AnsibleError("playbook settings spec %s not found or not a dict" % path)
        try:
            return data["argument_specs"]["main"].get("options") or {}
        except (KeyError, AttributeError):
            raise AnsibleError("%s has no argument_specs.main" % path)

    # The checks.

    def _check_role(self, host, name, role_path, entry_point, entry_vars, task_vars, extra_vars):
        specs = self._load_role_yaml(role_path, "meta", "argument_specs") or {}
        specs = specs.get("argument_specs") or {} if isinstance(specs, Mapping) else {}
        if specs and entry_point not in specs:
            return ["%s: role %s has no entry point %s (it has %s)" % (host, name, entry_point, ", ".join(sorted(specs)))]
        options = (specs.get(entry_point) or {}).get("options") or {}
        defaults = self._load_role_yaml(role_path, "defaults") or {}
        role_vars = self._load_role_yaml(role_path, "vars") or {}
        # A role that defines __<option> in vars/main.yml normalises that list option, and so takes its string forms.
        string_forms = tuple(option for option in options if "__" + option in role_vars)
        derived_before = len(self._derived)
        problems = self._check_options(host, name, options, defaults, task_vars, role_vars, entry_vars, extra_vars,
                                       string_forms)
        settings_file = os.path.join(role_path, "tasks", "settings.yml")
        # The cross-checks assume values of the right types: they run once every option of the role passed.
        if problems or len(self._derived) > derived_before or entry_point != "main" or not os.path.isfile(settings_file):
            return problems
        try:
            layers = (defaults, task_vars, role_vars, entry_vars, extra_vars)
            return self._run_settings_file(host, name, settings_file, layers)
        except SettingsFileError as exc:
            return ["%s: %s" % (host, exc)]

    @staticmethod
    def _context(defaults, task_vars, role_vars, local_vars, entry_vars, extra_vars):
        """The variables a role's task sees, lowest precedence first (role defaults ... extra vars)."""
        context = dict(defaults)
        for layer in (task_vars, role_vars, local_vars, entry_vars, extra_vars):
            context.update(layer)
        return context

    def _check_options(self, host, owner, options, defaults, task_vars, role_vars, entry_vars, extra_vars, string_forms):
        context = self._context(defaults, task_vars, role_vars, {}, entry_vars, extra_vars)
        templar = self._templar.copy_with_new_env(available_variables=context)
        given = set(task_vars) | set(entry_vars) | set(extra_vars)
        problems = []
        for option_name, option in options.items():
            option = option or {}
            secret = bool(option.get("no_log"))
            if option_name not in context:
                if option.get("required"):
                    problems.append("%s: %s is not set; %s needs it (%s)" % (
                        host, option_name, owner, option.get("description", "no description")))
                continue
            try:
                value = templar.template(context[option_name])
            except AnsibleUndefinedVariable as exc:
                self._unchecked.append("%s could not be checked before the run: %s" % (option_name, _first_line(exc)))
                continue
            except AnsibleError as exc:
                problems.append("%s: %s cannot be worked out: %s (%s settings)" % (host, option_name, _first_line(exc),
                                                                                   owner))
                continue
            found = check_value(option_name, option, value, option_name in string_forms, secret)
            if not found:
                found = self._ansible_check(option_name, option, value)
                found = ["%s=%s: %s" % (option_name, show(value, secret), message) for message in found]
            # A value the user did not set is the role's default, worked out from other settings: say so, and list it
            # after the problems with the settings themselves.
            if option_name in given:
                problems.extend("%s: %s (%s settings)" % (host, message, owner) for message in found)
            else:
                self._derived.extend("%s: %s (%s's default, worked out from other settings)" % (host, message, owner)
                                     for message in found)
        return problems

    @staticmethod
    def _ansible_check(name, option, value):
        """Ansible's own argument spec check of one value (choices, conversions to int, bool, ...)."""
        spec = {key: val for key, val in option.items()
                if key not in ("description", "short_description", "version_added", "example")}
        outcome = ArgumentSpecValidator({name: spec}).validate({name: value}, validate_role_argument_spec=True)
        messages = outcome.error_messages
        if outcome._no_log_values:
            messages = remove_values(messages, outcome._no_log_values)
        return list(messages)

    def _run_settings_file(self, host, role, path, layers):
        """Evaluate the assert tasks of a role's tasks/settings.yml as the role would run them."""
        defaults, task_vars, role_vars, entry_vars, extra_vars = layers
        tasks = self._load(path) or []
        if not isinstance(tasks, list):
            raise SettingsFileError("%s: expected a list of assert tasks" % path)
        problems = []
        for task in tasks:
            if not isinstance(task, Mapping):
                raise SettingsFileError("%s: expected a list of assert tasks, found %s" % (path, show(task)))
            actions = [key for key in ASSERT_ACTIONS if key in task]
            unknown = set(task) - TASK_KEYS
            if len(actions) != 1 or unknown:
                raise SettingsFileError(
                    "%s: task %s is not a plain assert task (keys %s); a role's settings.yml holds only assert tasks "
                    "with name, vars, when, loop and loop_control, so that the playbooks can check it before any change"
                    % (path, show(task.get("name", "?")), ", ".join(sorted(map(str, task)))))
            args = task[actions[0]] or {}
            local_vars = task.get("vars") or {}
            task_context = self._context(defaults, task_vars, role_vars, local_vars, entry_vars, extra_vars)
            templar = self._templar.copy_with_new_env(available_variables=task_context)
            label = task.get("name", "an assert task")
            try:
                items = [None]
                loop_var = None
                if "loop" in task:
                    loop_var = (task.get("loop_control") or {}).get("loop_var", "item")
                    items = templar.template(task["loop"])
                    if not isinstance(items, list):
                        raise AnsibleError("loop gave %s, not a list" % show(items))
                for item in items:
                    item_templar = templar
                    if loop_var:
                        item_templar = self._templar.copy_with_new_env(
                            available_variables=dict(task_context, **{loop_var: item}))
                    failed = self._assert_fails(item_templar, task.get("when", True), args.get("that", []))
                    if failed:
                        message = item_templar.template(args.get("fail_msg", args.get("msg", "assertion failed: %s"
                                                                                      % failed)))
                        problems.append((" ".join(map(str, message)) if isinstance(message, list) else str(message))
                                        .strip())
            except AnsibleUndefinedVariable as exc:
                self._unchecked.append("%s: the check %s could not be evaluated before the run: %s"
                                       % (role, show(label), _first_line(exc)))
            except AnsibleError as exc:
                problems.append("%s: %s: the check %s could not be evaluated: %s"
                                % (host, role, show(label), _first_line(exc)))
        return problems

    @staticmethod
    def _assert_fails(templar, when, that):
        """The first condition of that which is false (None when all hold or when is false)."""
        for condition in (when if isinstance(when, list) else [when]):
            if not templar.evaluate_conditional(condition):
                return None
        for condition in (that if isinstance(that, list) else [that]):
            if not templar.evaluate_conditional(condition):
                return condition
        return None


def _first_line(exc):
    text = str(getattr(exc, "message", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
