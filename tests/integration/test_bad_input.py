"""Bad input is refused before anything changes, on every playbook (issue 12), tried as a user would.

One fresh container of the shared base image (local/dgxspark-debian:bookworm), reached with the docker connection,
is the host (with pipelining, as ansible.cfg sets for SSH). Each case runs a playbook a user runs (site.yml, playbooks/rollout.yml, verify.yml, rollback.yml,
page_cache.yml) with one bad setting or inventory, and asserts the exit code, that the message names the host, the
variable and the value, and that the host is unchanged: the listing of every file of its root filesystem (path,
type, size, mode, owner, mtime and ctime: a write changes ctime) and its package list are the same before and after.

Stand-in, named: /usr/local/bin/nvidia-smi in the container is a script that prints the message a real nvidia-smi
prints when it cannot talk to the driver, and exits 9 (this machine has no NVIDIA driver to break). It is put there
before the first snapshot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from docker_support import docker, require_engine_and_image  # noqa: E402  (tests/ holds the shared helpers)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
IMAGE = os.environ.get("DGX_IMAGE", "local/dgxspark-debian:bookworm")
HOST = "dgxspark-badinput-1"

BROKEN_SMI = """#!/bin/sh
# Stand-in for a broken NVIDIA driver (tests/integration/test_bad_input.py).
echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running."
exit 9
"""

# Everything on the root filesystem; /proc, /sys and /dev are other filesystems (-xdev).
SNAPSHOT = (
    "find / -xdev -printf '%p %y %s %m %U:%G %T@ %C@ %l\\n' | LC_ALL=C sort; "
    "dpkg-query -W -f '${Package} ${Version} ${Status}\\n'"
)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    require_engine_and_image(IMAGE)
    docker("rm", "-f", HOST, check=False)
    docker("run", "-d", "--name", HOST, "--network", "none", IMAGE, "sleep", "infinity")
    try:
        docker("exec", "-i", HOST, "sh", "-c", "cat > /usr/local/bin/nvidia-smi && chmod 0755 /usr/local/bin/nvidia-smi",
               input=BROKEN_SMI)
        work = tmp_path_factory.mktemp("badinput")
        inventory = work / "inventory.yml"
        # Only what the host needs to pass preflight's host checks in the cases meant to pass them.
        inventory.write_text(json.dumps({"all": {"children": {"spark": {
            "hosts": {HOST: {"ansible_connection": "community.docker.docker"}},
            "vars": {"preflight_min_free_disk_gb": 1, "preflight_cuda_build": False}}}}}))
        yield {"inventory": inventory, "work": work, "before": snapshot()}
    finally:
        docker("rm", "-f", HOST, check=False)


# Ansible runs every module, read-only ones too (a bare "ansible -m ping"), from a directory it creates in /tmp and
# removes afterwards; on a fresh container that also copies /tmp up into the overlay's upper layer, which touches
# "/". So the times of these two directories are left out; every entry in them is still listed.
TOUCHED_BY_ANSIBLE = ("/ d ", "/tmp d ")


def snapshot():
    """The host's file listing and package list."""
    lines = docker("exec", HOST, "sh", "-c", SNAPSHOT).stdout.splitlines()
    return "\n".join(" ".join(line.split()[:5]) if line.startswith(TOUCHED_BY_ANSIBLE) else line for line in lines)


def run(host, playbook, *args, inventory=None, callback="ansible.posix.json"):
    """Run a playbook as a user would; return (rc, the failure and debug messages, the whole output)."""
    env = {
        "PATH": "%s:/usr/bin:/bin:/usr/sbin:/sbin" % BIN,
        "HOME": str(Path.home()),
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_STDOUT_CALLBACK": callback,
        "ANSIBLE_LOCAL_TEMP": str(host["work"] / ".ansible-local"),
        # As ansible.cfg sets for SSH (the docker connection reads the general setting): modules are piped to the
        # host's Python, with no remote temporary directory under ~/.ansible.
        "ANSIBLE_PIPELINING": "true",
    }
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory or host["inventory"]), playbook, *args],
        cwd=host["work"], capture_output=True, text=True, env=env, check=False)
    text = proc.stdout + proc.stderr
    messages = []
    if callback == "ansible.posix.json":
        doc = json.loads(proc.stdout[proc.stdout.index("{"):])
        for each_play in doc["plays"]:
            for task in each_play["tasks"]:
                for result in task["hosts"].values():
                    # the failures, and the warnings that were given (a skipped "Warn ..." task said nothing)
                    warned = task["task"]["name"].split(" : ")[-1].startswith("Warn") and not result.get("skipped")
                    if result.get("failed") or warned:
                        messages.append(str(result.get("msg", "")))
    return proc.returncode, messages, text


def site(name):
    return str(ROOT / "site.yml") if name == "site" else str(ROOT / "playbooks" / (name + ".yml"))


# (id, playbook, extra arguments, fragments the one failure message must hold).
# Each fails in the first play on the hosts, before any task changes the host.
SETTINGS_CASES = [
    ("api-key", "site", ["-e", "vllm_server_host=0.0.0.0", "-e", "vllm_server_model=Qwen/Qwen3-0.6B"],
     [HOST + ": refusing to listen on vllm_server_host=0.0.0.0 without an API key", "vllm_server_api_key"]),
    ("fa2-state", "site", ["-e", "fa2_native_state=sideways"],
     [HOST + ': fa2_native_state="sideways": value of fa2_native_state must be one of: present, absent, got: sideways']),
    ("server-state", "site", ["-e", "vllm_server_state=maybe", "-e", "vllm_server_model=Qwen/Qwen3-0.6B"],
     [HOST + ': vllm_server_state="maybe": value of vllm_server_state must be one of: started, stopped']),
    ("args-string", "site", ["-e", "vllm_server_args=--max-model-len=4096", "-e", "vllm_server_model=Qwen/Qwen3-0.6B"],
     [HOST + ': vllm_server_args is the string "--max-model-len=4096"; expected a dict',
      """-e '{"vllm_server_args": {"--max-model-len": "4096"}}'"""]),
    ("model-list", "site", ["-e", '{"vllm_server_model": ["Qwen/Qwen3-0.6B", "x"]}'],
     [HOST + ': vllm_server_model is a list ["Qwen/Qwen3-0.6B", "x"]; expected a string']),
    ("index-urls", "site", ["-e", "vllm_venv_extra_index_urls=http://mirror-a/simple,http://mirror-b/simple",
                            "-e", "vllm_venv_wheelhouse="],
     [HOST + ': vllm_venv_extra_index_urls is the string "http://mirror-a/simple,http://mirror-b/simple"; '
             "expected a list of strings",
      """-e '{"vllm_venv_extra_index_urls": ["http://mirror-a/simple", "http://mirror-b/simple"]}'"""]),
    ("path", "site", ["-e", "fa2_native_work_dir=build"],
     [HOST + ': fa2_native_work_dir is the string "build", which is not an absolute path']),
    ("rollout-api-key", "rollout", ["-e", "vllm_server_host=0.0.0.0", "-e", "vllm_server_model=Qwen/Qwen3-0.6B"],
     [HOST + ": refusing to listen on vllm_server_host=0.0.0.0 without an API key"]),
    ("rollout-roles", "rollout", ["-e", "dgxspark_rollout_roles=vllm_server", "-e", "vllm_server_model=m"],
     [HOST + ': dgxspark_rollout_roles is the string "vllm_server"; expected a list of strings',
      "(playbook rollout settings)"]),
    ("rollback-port", "rollback", ["-e", "vllm_server_port=0", "-e", "vllm_server_model=m"],
     [HOST + ": vllm_server_port=0 (expected 1-65535)"]),
    ("verify-smoke", "verify", ["-e", "dgxspark_verify_smoke=maybe"],
     [HOST + ': dgxspark_verify_smoke="maybe": argument \'dgxspark_verify_smoke\' is of type str and we were '
             "unable to convert to bool"]),
    ("benchmark-concurrencies", "benchmark", ["-e", "dgxspark_benchmark_concurrencies=8"],
     [HOST + ': dgxspark_benchmark_concurrencies is the string "8"; expected a list', "(playbook benchmark settings)"]),
    ("page-cache-level", "page_cache", ["-e", "page_cache_level=7"],
     [HOST + ': page_cache_level="7": value of page_cache_level must be one of: 1, 2, 3, got: 7']),
    ("cluster-size-and-tp", "site", ["-e", "vllm_server_model=m", "-e", "vllm_server_cluster=spark",
                                     "-e", '{"vllm_server_args": {"tensor-parallel-size": 4}}', "-e", "vllm_server_cluster_interface="],
     [HOST + ": cluster spark: it has 1 host(s); a cluster needs at least 2",
      "tensor-parallel-size x pipeline-parallel-size = 4 x 1 in vllm_server_args, but its 1 host(s) x "
      "vllm_server_cluster_gpus_per_node=1 make 1 GPUs; the product must equal them",
      "vllm_server_cluster_interface is empty"]),
    ("cluster-group", "site", ["-e", "vllm_server_model=m", "-e", "vllm_server_cluster=pair9"],
     [HOST + ": cluster pair9: no inventory group of that name"]),
    ("cluster-head", "rollout", ["-e", "vllm_server_model=m", "-e", "vllm_server_cluster=spark", "-e", "vllm_server_cluster_head=ghost",
                                 "-e", '{"vllm_server_args": {"nnodes": 2}}'],
     [HOST + ": cluster spark:", "the head ghost (vllm_server_cluster_head) is not one of its hosts (%s)" % HOST,
      "vllm_server_args sets nnodes, which the role sets itself in cluster mode"]),
    ("all-at-once", "site", ["-e", "fa2_native_state=sideways", "-e", "uv_source=pip", "-e", "cuda_env_extra=FOO"],
     [HOST + ': fa2_native_state="sideways"', HOST + ': uv_source="pip"',
      HOST + ': cuda_env_extra is the string "FOO"; expected a dict']),
]


@pytest.mark.parametrize("case, playbook, args, fragments", SETTINGS_CASES, ids=[c[0] for c in SETTINGS_CASES])
def test_a_bad_setting_is_refused_in_the_first_play_and_nothing_changes(host, case, playbook, args, fragments):
    rc, messages, text = run(host, site(playbook), *args)
    assert rc == 2, text
    assert len(messages) == 1, text
    for fragment in fragments:
        assert fragment in messages[0], (fragment, messages[0])
    assert "Nothing on %s was changed" % HOST in messages[0]
    assert snapshot() == host["before"], "case %s changed the host" % case


def test_the_failure_is_one_message_without_the_spec(host):
    """The default output: the message once as Ansible's error line, once in the result; no spec dump."""
    rc, _messages, text = run(host, site("site"), "-e", "fa2_native_state=sideways", callback="default")
    assert rc == 2, text
    assert "argument_spec_data" not in text and "validate_args_context" not in text, text
    # The whole run prints about 25 lines (plays, tasks, the error and the recap), not a 150-line spec.
    assert len(text.splitlines()) < 40, text
    assert snapshot() == host["before"]


@pytest.mark.parametrize("playbook", ["site", "rollout", "verify", "rollback", "page_cache", "benchmark"])
def test_an_inventory_without_the_group_stops_naming_the_group_and_the_setting(host, playbook):
    inventory = host["work"] / "sparks.yml"
    inventory.write_text(json.dumps({"all": {"children": {"sparks": {
        "hosts": {HOST: {"ansible_connection": "community.docker.docker"}}}}}}))
    rc, messages, text = run(host, site(playbook), "-e", "vllm_server_model=m", inventory=inventory)
    assert rc == 2, text
    assert messages == [
        "No host to work on: no host of the inventory matches 'spark' (dgxspark_hosts, default: the group spark). "
        "The inventory has group sparks (%s). Put the hosts in a group named spark, or set dgxspark_hosts to your "
        "group or pattern (-e dgxspark_hosts=NAME, or in the inventory's all:vars). Nothing was changed." % HOST], text
    assert "__verify_rows" not in text
    assert snapshot() == host["before"]


def test_a_host_list_without_groups_stops_too(host):
    rc, messages, text = run(host, site("site"), "-e", "ansible_connection=community.docker.docker",
                             inventory=HOST + ",")
    assert rc == 2, text
    assert "no host of the inventory matches 'spark'" in messages[0] and "group ungrouped (%s)" % HOST in messages[0]
    assert snapshot() == host["before"]


def test_a_limit_outside_the_group_stops_too(host):
    inventory = host["work"] / "two-groups.yml"
    inventory.write_text(json.dumps({"all": {"children": {
        "spark": {"hosts": {HOST: {"ansible_connection": "community.docker.docker"}}},
        "lab": {"hosts": {"lab-1": {}}}}}}))
    rc, messages, text = run(host, site("rollout"), "-l", "lab-1", inventory=inventory)
    assert rc == 2, text
    assert messages[0].startswith(
        "No host to work on: none of the hosts matching 'spark' (%s) is within --limit lab-1 (dgxspark_hosts, "
        "default: the group spark). The inventory has group spark (%s), group lab (lab-1)." % (HOST, HOST)), text
    assert snapshot() == host["before"]


def test_a_broken_driver_fails_saying_what_was_expected(host):
    rc, messages, text = run(host, site("site"), "--tags", "preflight")
    assert rc == 2, text
    assert messages == [
        "%s: no NVIDIA GPU found (/usr/local/bin/nvidia-smi failed (rc=9): NVIDIA-SMI has failed because it couldn't "
        "communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.); "
        "expected nvidia-smi to list a GPU with compute capability 12.0 or 12.1 (a loaded NVIDIA driver that matches "
        "its kernel module: check dmesg and nvidia-smi on the host). For a host staged before its GPU or driver is "
        "ready, set dgxspark_require_gpu=false (the GPU checks then warn; see the README for what that does not "
        "cover)." % HOST], text
    assert snapshot() == host["before"]


def test_a_broken_driver_with_require_gpu_false_warns_and_goes_on(host):
    # With one mirror URL given as a string, which the first play accepts as a list of one.
    rc, messages, text = run(host, site("site"), "--tags", "preflight", "-e", "dgxspark_require_gpu=false",
                             "-e", "vllm_venv_extra_index_urls=http://mirror/simple", "-e", "vllm_venv_wheelhouse=")
    assert rc == 0, text
    assert len(messages) == 1 and messages[0].startswith(
        "WARNING (dgxspark_require_gpu=false, continuing without the GPU steps): %s: no NVIDIA GPU found "
        "(/usr/local/bin/nvidia-smi failed (rc=9): NVIDIA-SMI has failed" % HOST), text
    assert snapshot() == host["before"]


def test_the_roles_use_one_mirror_url_given_as_a_string(tmp_path):
    """What the roles make of the string forms the first play accepts (their own vars, on localhost)."""
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"ansible.builtin.include_vars": str(ROOT / "roles" / role / sub / "main.yml")}
        for role in ("vllm_venv", "fa4_shim") for sub in ("defaults", "vars")] + [
        {"ansible.builtin.debug": {"msg": "{{ [__vllm_venv_main_index_args, __vllm_venv_main_indexes] }}"}},
        {"ansible.builtin.debug": {"msg": "{{ __fa4_shim_index_args }}"}}]}]
    (tmp_path / "play.yml").write_text(json.dumps(play))
    env = {"PATH": "%s:/usr/bin:/bin" % BIN, "HOME": str(Path.home()), "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
           "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"}
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(tmp_path / "play.yml"),
         "-e", "vllm_venv_extra_index_urls=http://mirror/simple", "-e", "vllm_venv_wheelhouse=",
         "-e", "fa4_shim_extra_index_urls=http://mirror/simple", "-e", "fa4_shim_wheelhouse=",
         "-e", "fa4_shim_index_url=http://pypi-mirror/simple"],
        capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout[proc.stdout.index("{"):])
    shown = [task["hosts"]["localhost"]["msg"] for task in doc["plays"][0]["tasks"][-2:]]
    assert shown == [
        [["--index-url", "https://pypi.org/simple", "--extra-index-url=http://mirror/simple"],
         ["https://pypi.org/simple", "http://mirror/simple"]],
        ["--index-url", "http://pypi-mirror/simple", "--extra-index-url=http://mirror/simple"]]
