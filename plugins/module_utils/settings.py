# -*- coding: utf-8 -*-
# Copyright: dgxspark.vllm contributors
# Apache License 2.0 (see LICENSE)
"""Type checks of role and playbook settings that Ansible's argument spec validation lets through.

Ansible converts a value to the declared type to check it, but the variable keeps the value it was given:
a list given for a ``str`` option passes and is later written as a Python repr; a string given for a
``list`` or ``dict`` option passes (``"a,b"`` becomes a list, ``"k=v"`` a dict, for the check only) and
breaks a template later. These functions refuse such values with a message naming the variable, the
value and the type expected, and accept the few string forms that are unambiguous.

Plain functions with no Ansible imports, so they can be unit tested directly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

# Longest value quoted in a message.
SHOW_LIMIT = 160

_SEPARATORS = re.compile(r"[\s,]")


def show(value, secret=False):
    """A value as a message quotes it: JSON-like, shortened; secrets hidden."""
    if secret:
        return "(hidden: no_log)"
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > SHOW_LIMIT:
        text = text[:SHOW_LIMIT - 3] + "..."
    return text


def kind(value):
    """'a string', 'a list', ... for a message."""
    if isinstance(value, str):
        return "the string"
    if isinstance(value, bool):
        return "the boolean"
    if isinstance(value, (int, float)):
        return "the number"
    if isinstance(value, Mapping):
        return "a dict"
    if isinstance(value, (list, tuple)):
        return "a list"
    if value is None:
        return "null"
    return "a %s" % type(value).__name__


def is_one_item(text):
    """Whether a string given for a list is unambiguously one item (no comma, no blank, not JSON)."""
    return bool(text) and not _SEPARATORS.search(text) and text[0] not in "[{"


def string_as_list(text):
    """The list a string stands for where a role accepts the string form: "" is none, one item is a list of one.

    Returns None where the string is ambiguous ("a,b", "a b", JSON): such a value is refused.
    """
    if text == "":
        return []
    if is_one_item(text):
        return [text]
    return None


def _json_of(text, kind_wanted):
    """The value of a string that is JSON of the wanted kind (list or dict), else None."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, kind_wanted) else None


def _suggest_dict(text):
    """{"k": "v", ...} for "k=v k2=v2" or a JSON object (what the user probably meant), else None."""
    as_json = _json_of(text, dict)
    if as_json is not None:
        return as_json
    pairs = text.split()
    if not pairs or any("=" not in pair or pair.startswith("=") for pair in pairs):
        return None
    return dict(pair.split("=", 1) for pair in pairs)


def _suggest_list(text):
    as_json = _json_of(text, list)
    if as_json is not None:
        return as_json
    items = [item for item in re.split(r"[\s,]+", text) if item]
    return items or ["..."]


def _cli_json(name, value):
    return "-e '%s'" % json.dumps({name: value}, ensure_ascii=False)


_TYPE_WORDS = {
    "str": "a string",
    "path": "an absolute path on the host",
    "list": "a list",
    "dict": "a dict",
}


def expected_words(option):
    """'a list of strings', 'a dict', ... for a message."""
    typ = option.get("type", "str")
    words = _TYPE_WORDS.get(typ, "a value of type %s" % typ)
    if typ == "list" and option.get("elements"):
        element = option["elements"]
        words += " of " + {"str": "strings", "path": "absolute paths", "dict": "dicts"}.get(element, element)
    return words


def check_path(text):
    """The problem with a host path, or None: it must be absolute and on one line."""
    if not isinstance(text, str):
        return None  # a type problem, reported by check_value
    if not text.startswith("/"):
        return "is not an absolute path"
    if "\n" in text or "\r" in text:
        return "has a line break"
    return None


def check_value(name, option, value, string_form=False, secret=False):
    """Problems (a list of sentences, without the host) with one setting's value.

    name: the variable; option: its argument spec entry; value: the templated value.
    string_form: whether the role accepts a string for this list option (it normalises it, see string_as_list).
    Values Ansible converts safely (a number for a string, "yes" for a bool, "8000" for an int) are left to
    Ansible's own validation, which runs after this.
    """
    if value is None:
        return []
    typ = option.get("type", "str")
    shown = show(value, secret)
    problems = []
    if typ in ("str", "path"):
        if isinstance(value, (Mapping, list, tuple)):
            problems.append("%s is %s %s; expected %s" % (name, kind(value), shown, expected_words(option)))
        elif typ == "path":
            why = check_path(value)
            if why:
                problems.append("%s is %s %s, which %s; expected %s"
                                % (name, kind(value), shown, why, expected_words(option)))
    elif typ == "list":
        if isinstance(value, str):
            if not (string_form and string_as_list(value) is not None):
                hint = ("on the command line give a list as JSON: %s" % _cli_json(name, _suggest_list(value))
                        if value else "give an empty list as []")
                problems.append("%s is %s %s; expected %s (%s)" % (name, kind(value), shown, expected_words(option),
                                                                   hint))
        elif isinstance(value, Mapping):
            problems.append("%s is %s %s; expected %s" % (name, kind(value), shown, expected_words(option)))
        elif isinstance(value, (list, tuple)):
            problems.extend(check_elements(name, option, value, secret))
    elif typ == "dict":
        if isinstance(value, str):
            suggestion = _suggest_dict(value) if value else {}
            hint = ("on the command line give a dict as JSON: %s"
                    % _cli_json(name, suggestion if suggestion is not None else {"key": "value"}))
            problems.append("%s is %s %s; expected %s (%s)" % (name, kind(value), shown, expected_words(option), hint))
        elif isinstance(value, (list, tuple)):
            problems.append("%s is %s %s; expected %s" % (name, kind(value), shown, expected_words(option)))
    return problems


def check_elements(name, option, items, secret=False):
    """Problems with the items of a list setting: a list or dict where a string item is expected, a relative path."""
    element = option.get("elements")
    problems = []
    if element not in ("str", "path"):
        return problems
    for index, item in enumerate(items):
        if isinstance(item, (Mapping, list, tuple)):
            problems.append("%s item %d is %s %s; expected %s" % (name, index, kind(item), show(item, secret),
                                                                  expected_words(option)))
        elif element == "path":
            why = check_path(item)
            if why:
                problems.append("%s item %d is %s %s, which %s; expected %s" % (
                    name, index, kind(item), show(item, secret), why, expected_words(option)))
    return problems
