"""The contract of dgxspark.vllm.validate_settings, with small roles written by the test, on localhost.

tests/integration/test_bad_input.py runs the collection's playbooks against a container; this file checks what
those runs cannot show cheaply: where each value comes from (precedence), how a role's tasks/settings.yml is
evaluated (vars, when, loop) and what it may hold, the string forms a role's normaliser allows, secrets, and the
lookup of roles and entry points. The action never touches the host; these runs use localhost only for its facts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

SPEC = {"argument_specs": {
    "main": {"short_description": "demo", "options": {
        "bi_demo_a": {"type": "str", "default": "default", "description": "a"},
        "bi_demo_b": {"type": "str", "default": "default", "description": "b"},
        "bi_demo_c": {"type": "str", "default": "default", "description": "c"},
        "bi_demo_derived": {"type": "str", "default": "x", "description": "worked out from bi_demo_a"},
        "bi_demo_urls": {"type": "list", "elements": "str", "default": [], "description": "normalised"},
        "bi_demo_names": {"type": "list", "elements": "str", "default": [], "description": "not normalised"},
        "bi_demo_secret": {"type": "str", "default": "", "no_log": True, "description": "a secret"},
        "bi_demo_dir": {"type": "path", "default": "/opt/demo", "description": "a host path"},
        "bi_demo_state": {"type": "str", "default": "present", "choices": ["present", "absent"], "description": "s"},
        "bi_demo_ports": {"type": "list", "elements": "int", "default": [80], "description": "ports"},
    }},
    "status": {"short_description": "another entry point", "options": {
        "bi_demo_a": {"type": "str", "default": "default", "description": "a"}}},
}}

DEFAULTS = {"bi_demo_a": "default", "bi_demo_b": "default", "bi_demo_c": "default",
            "bi_demo_derived": "{{ bi_demo_a }}", "bi_demo_urls": [], "bi_demo_names": [], "bi_demo_secret": "",
            "bi_demo_dir": "/opt/demo", "bi_demo_state": "present", "bi_demo_ports": [80]}

VARS = {"__bi_demo_urls": "{{ ([bi_demo_urls] if bi_demo_urls else []) if bi_demo_urls is string else bi_demo_urls }}",
        "__bi_demo_limit": 1024}

SETTINGS = [
    {"name": "Show the values the role sees",
     "ansible.builtin.assert": {"that": ["bi_demo_a == 'never'"], "quiet": True,
                                "fail_msg": "{{ inventory_hostname }}: a={{ bi_demo_a }} b={{ bi_demo_b }} "
                                            "c={{ bi_demo_c }} urls={{ __bi_demo_urls }}"},
     "when": "bi_demo_show | default(false) | bool"},
    {"name": "Ports below the limit",
     "ansible.builtin.assert": {"that": ["item | int < __limit"], "quiet": True,
                                "fail_msg": "{{ inventory_hostname }}: port {{ item }} is not below {{ __limit }}"},
     "vars": {"__limit": "{{ __bi_demo_limit }}"},
     "loop": "{{ bi_demo_ports }}",
     "when": "bi_demo_state == 'present'"},
]


def write_role(base: Path, name, spec=None, defaults=None, role_vars=None, settings=None):
    role = base / name
    for sub, data in (("meta/argument_specs.yml", spec), ("defaults/main.yml", defaults),
                      ("vars/main.yml", role_vars), ("tasks/settings.yml", settings)):
        if data is not None:
            (role / sub).parent.mkdir(parents=True, exist_ok=True)
            (role / sub).write_text(json.dumps(data))
    (role / "tasks").mkdir(parents=True, exist_ok=True)
    (role / "tasks" / "main.yml").write_text("[]")


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    base = tmp_path_factory.mktemp("validate_settings")
    roles = base / "roles"
    write_role(roles, "bi_demo", SPEC, DEFAULTS, VARS, SETTINGS)
    write_role(roles, "bi_nosettings", SPEC, DEFAULTS, {})
    write_role(roles, "bi_broken", SPEC, DEFAULTS, {}, [
        {"name": "Not an assert", "ansible.builtin.set_fact": {"x": 1}}])

    def run(*cases, extra=()):
        """cases: (id, validate_settings args, play vars); returns {id: failure message or 'passed'}."""
        tasks = []
        for case_id, args, play_vars in cases:
            tasks.append({"name": "case " + case_id, "vars": play_vars, "block": [
                {"name": "Check", "dgxspark.vllm.validate_settings": args},
                {"name": "Passed", "ansible.builtin.debug": {"msg": "CASE %s | passed" % case_id}}],
                "rescue": [{"name": "Report", "ansible.builtin.debug": {
                    "msg": "CASE %s | {{ ansible_failed_result.msg }}" % case_id}}]})
        playbook = base / "play.yml"
        playbook.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
        env = {"PATH": "%s:/usr/bin:/bin" % BIN, "HOME": str(Path.home()), "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
               "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json", "ANSIBLE_ROLES_PATH": str(roles)}
        proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook), *extra],
                              capture_output=True, text=True, env=env, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        doc = json.loads(proc.stdout[proc.stdout.index("{"):])
        found = {}
        for task in doc["plays"][0]["tasks"]:
            msg = str(task["hosts"].get("localhost", {}).get("msg", ""))
            if msg.startswith("CASE "):
                case_id, text = msg[5:].split(" | ", 1)
                found[case_id] = text
        return found, proc.stdout + proc.stderr

    return run


def test_values_come_from_defaults_inventory_role_vars_entry_vars_then_extra_vars(runner):
    found, out = runner(
        ("precedence", {"roles": [{"name": "bi_demo", "vars": {"bi_demo_b": "entry", "bi_demo_c": "entry"}}]},
         {"bi_demo_show": True, "bi_demo_a": "play", "bi_demo_b": "play", "bi_demo_c": "play"}),
        extra=["-e", "bi_demo_c=extra", "-e", "bi_demo_urls=http://mirror/simple"])
    assert found["precedence"] == "localhost: a=play b=entry c=extra urls=['http://mirror/simple']", out


def test_settings_file_vars_loop_and_when(runner):
    found, out = runner(
        ("loop", {"roles": ["bi_demo"]}, {"bi_demo_ports": [80, 2048, 4096]}),
        ("when-false", {"roles": ["bi_demo"]}, {"bi_demo_ports": [4096], "bi_demo_state": "absent"}),
        ("other-entry-point", {"roles": [{"name": "bi_demo", "entry_point": "status"}]}, {"bi_demo_ports": [4096]}))
    assert found["loop"] == "localhost: port 2048 is not below 1024\nlocalhost: port 4096 is not below 1024", out
    assert found["when-false"] == "passed", out
    # tasks/settings.yml belongs to the main entry point; other entry points get their argument spec only.
    assert found["other-entry-point"] == "passed", out


def test_types_strings_paths_choices_and_secrets(runner):
    found, out = runner(
        ("url-string", {"roles": ["bi_demo"]}, {"bi_demo_urls": "http://mirror/simple"}),
        ("urls-comma", {"roles": ["bi_demo"]}, {"bi_demo_urls": "http://a,http://b"}),
        ("names-string", {"roles": ["bi_demo"]}, {"bi_demo_names": "one"}),
        ("list-for-str", {"roles": ["bi_demo"]}, {"bi_demo_a": ["x", "y"]}),
        ("derived", {"roles": ["bi_demo"]}, {"bi_demo_a": ["x"]}),
        ("relative", {"roles": ["bi_demo"]}, {"bi_demo_dir": "demo"}),
        ("choice", {"roles": ["bi_demo"]}, {"bi_demo_state": "sideways"}),
        ("int-items", {"roles": ["bi_demo"]}, {"bi_demo_ports": ["http"]}),
        ("secret", {"roles": ["bi_demo"]}, {"bi_demo_secret": ["sk-do-not-print"]}),
        ("undefined", {"roles": ["bi_demo"]}, {"bi_demo_b": "{{ no_such_variable }}", "bi_demo_state": "sideways"}),
        ("not-a-template", {"roles": ["bi_demo"]}, {"bi_demo_b": "{{ 1 + }}"}),
        ("before-changes", {"roles": ["bi_demo"], "before_changes": True}, {"bi_demo_state": "sideways"}))
    assert found["url-string"] == "passed", out
    assert found["urls-comma"].startswith('localhost: bi_demo_urls is the string "http://a,http://b"; expected a list'), out
    assert found["names-string"].startswith('localhost: bi_demo_names is the string "one"; expected a list of strings'
                                            """ (on the command line give a list as JSON: -e '{"bi_demo_names": ["one"]}')"""), out
    assert found["list-for-str"].startswith('localhost: bi_demo_a is a list ["x", "y"]; expected a string (bi_demo settings)'), out
    # A default worked out from a bad value is named as such, after the value itself.
    assert found["derived"] == ('localhost: bi_demo_a is a list ["x"]; expected a string (bi_demo settings)\n'
                                'localhost: bi_demo_derived is a list ["x"]; expected a string '
                                "(bi_demo's default, worked out from other settings)"), out
    assert found["relative"].startswith('localhost: bi_demo_dir is the string "demo", which is not an absolute path'), out
    assert found["choice"] == ('localhost: bi_demo_state="sideways": value of bi_demo_state must be one of: present, '
                               'absent, got: sideways (bi_demo settings)'), out
    assert found["int-items"].startswith('localhost: bi_demo_ports=["http"]: '), out
    assert "sk-do-not-print" not in out
    assert found["secret"].startswith("localhost: bi_demo_secret is a list (hidden: no_log); expected a string"), out
    # A value that refers to something not defined yet (a fact gathered later) is left to the role, with a warning;
    # the other values are still checked.
    assert found["undefined"].startswith('localhost: bi_demo_state="sideways"'), out
    assert "localhost: bi_demo_b could not be checked before the run: 'no_such_variable' is undefined" in out, out
    assert found["not-a-template"].startswith("localhost: bi_demo_b cannot be worked out: "), out
    assert found["before-changes"].endswith(
        "\nNothing on localhost was changed: the settings are checked in the first play, before any task changes a host."), out


def test_roles_entry_points_and_the_settings_file_contract(runner):
    found, out = runner(
        ("not-found", {"roles": ["bi_nope"]}, {}),
        ("entry-point", {"roles": [{"name": "bi_demo", "entry_point": "nope"}]}, {}),
        ("bad-entry", {"roles": [{"name": "bi_demo", "when": "x"}]}, {}),
        ("no-settings-file", {"roles": ["bi_nosettings"]}, {"bi_demo_ports": [4096]}),
        ("not-assert", {"roles": ["bi_broken"]}, {}),
        ("collection-roles", {"roles": ["uv", "dgxspark.vllm.page_cache"], "playbook": "page_cache"}, {}),
        ("playbook-spec", {"playbook": "rollout"}, {"dgxspark_rollout_vllm_verify": "perhaps"}))
    assert found["not-found"].startswith("localhost: role bi_nope not found (looked in "), out
    assert found["entry-point"] == "localhost: role bi_demo has no entry point nope (it has main, status)", out
    assert found["bad-entry"].startswith("localhost: roles item {") and "unknown keys when" in found["bad-entry"], out
    assert found["no-settings-file"] == "passed", out
    assert "bi_broken/tasks/settings.yml: task \"Not an assert\" is not a plain assert task" in found["not-assert"], out
    assert found["collection-roles"] == "passed", out
    assert found["playbook-spec"].startswith('localhost: dgxspark_rollout_vllm_verify="perhaps": argument '
                                             "'dgxspark_rollout_vllm_verify' is of type str"), out
    assert found["playbook-spec"].endswith("(playbook rollout settings)"), out


@pytest.mark.parametrize("module", ["validate_settings", "gpu_facts", "model_head_dim"])
def test_the_documentation_parses(module):
    proc = subprocess.run([str(BIN / "ansible-doc"), "-t", "module", "dgxspark.vllm." + module],
                          capture_output=True, text=True, check=False,
                          env={"PATH": "%s:/usr/bin:/bin" % BIN, "HOME": str(Path.home()),
                               "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "EXAMPLES" in proc.stdout
