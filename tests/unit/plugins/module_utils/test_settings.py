"""Unit tests of the strict type checks in plugins/module_utils/settings.py (used by validate_settings)."""

from __future__ import annotations

import pytest

from ansible_collections.dgxspark.vllm.plugins.module_utils import settings

STR = {"type": "str"}
PATH = {"type": "path"}
LIST = {"type": "list", "elements": "str"}
PATHS = {"type": "list", "elements": "path"}
DICT = {"type": "dict"}
INT = {"type": "int"}


# (option, value, string form accepted, expected problem fragments; [] for none)
CASES = [
    # A list or dict for a string: Ansible would turn it into its Python repr.
    (STR, ["Qwen/Qwen3-0.6B", "x"], False, ['vllm_x is a list ["Qwen/Qwen3-0.6B", "x"]', "expected a string"]),
    (STR, {"a": 1}, False, ['vllm_x is a dict {"a": 1}', "expected a string"]),
    (STR, "Qwen/Qwen3-0.6B", False, []),
    # Scalars Ansible converts safely are left to it.
    (STR, 3.12, False, []),
    (STR, True, False, []),
    (INT, "8000", False, []),
    # Host paths: absolute, one line.
    (PATH, "/opt/vllm/venv", False, []),
    (PATH, "opt/vllm", False, ['vllm_x is the string "opt/vllm", which is not an absolute path',
                               "expected an absolute path on the host"]),
    (PATH, "", False, ["is not an absolute path"]),
    (PATH, "/opt/a\nb", False, ["has a line break"]),
    (PATH, ["/opt"], False, ["vllm_x is a list", "expected an absolute path"]),
    (PATHS, ["/usr/local/cuda/bin", "bin"], False, ['vllm_x item 1 is the string "bin", which is not an absolute path']),
    # A string for a list: refused unless the role normalises it, and then only "" and one item.
    (LIST, "http://mirror/simple", False, ['vllm_x is the string "http://mirror/simple"', "expected a list of strings",
                                           """-e '{"vllm_x": ["http://mirror/simple"]}'"""]),
    (LIST, "http://mirror/simple", True, []),
    (LIST, "", True, []),
    (LIST, "", False, ["give an empty list as []"]),
    (LIST, "http://a,http://b", True, ["""-e '{"vllm_x": ["http://a", "http://b"]}'"""]),
    (LIST, "a b", True, ["""-e '{"vllm_x": ["a", "b"]}'"""]),
    (LIST, '["a", "b"]', True, ["expected a list of strings", """-e '{"vllm_x": ["a", "b"]}'"""]),
    (LIST, "[]", False, ["""-e '{"vllm_x": []}'"""]),
    (LIST, {"a": 1}, False, ["vllm_x is a dict", "expected a list of strings"]),
    (LIST, ["a", ["b"]], False, ['vllm_x item 1 is a list ["b"]; expected a list of strings']),
    (LIST, ["a", "b"], False, []),
    # A string for a dict: always refused, with the JSON the user probably meant.
    (DICT, "--max-model-len=4096", False, ['vllm_x is the string "--max-model-len=4096"; expected a dict',
                                           """-e '{"vllm_x": {"--max-model-len": "4096"}}'"""]),
    (DICT, "not a pair", False, ["""-e '{"vllm_x": {"key": "value"}}'"""]),
    (DICT, '{"max-model-len": 4096}', False, ["""-e '{"vllm_x": {"max-model-len": 4096}}'"""]),
    (DICT, ["a"], False, ['vllm_x is a list ["a"]; expected a dict']),
    (DICT, {"max-model-len": 4096}, False, []),
    (DICT, None, False, []),
]


@pytest.mark.parametrize("option, value, string_form, expected", CASES)
def test_check_value(option, value, string_form, expected):
    problems = settings.check_value("vllm_x", option, value, string_form=string_form)
    if not expected:
        assert problems == []
    else:
        assert len(problems) == 1, problems
        for fragment in expected:
            assert fragment in problems[0], problems[0]


def test_secret_values_are_never_shown():
    problems = settings.check_value("vllm_server_api_key", STR, ["sk-very-secret"], secret=True)
    assert problems and "sk-very-secret" not in problems[0] and "(hidden: no_log)" in problems[0]


def test_string_as_list():
    assert settings.string_as_list("") == []
    assert settings.string_as_list("http://mirror/simple") == ["http://mirror/simple"]
    assert settings.string_as_list("a,b") is None
    assert settings.string_as_list("a b") is None
    assert settings.string_as_list('["a"]') is None


def test_long_values_are_shortened():
    shown = settings.show("x" * 1000)
    assert len(shown) == settings.SHOW_LIMIT and shown.endswith("...")
