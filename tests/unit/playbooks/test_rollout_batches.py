"""The rollout role's `batches` entry point (playbooks/rollout.yml's second play): hosts in batches of whole clusters.

Real ansible-playbook runs on hosts that are this machine (connection local): the batches are computed from the
inventory alone, so no host is touched. The play after it rolls over the group the entry point fills, with the
batch sizes it computed as its `serial`, the way rollout.yml does; each batch prints the hosts it holds.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
# Seven hosts in this inventory order: two single hosts between the members of a pair and of a trio.
ORDER = ["s1", "a1", "s2", "t1", "a2", "t2", "t3"]
CLUSTER = {"a1": "pair", "a2": "pair", "t1": "trio", "t2": "trio", "t3": "trio"}
PLAYBOOK = """
- hosts: spark
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: dgxspark.vllm.rollout
        tasks_from: batches
- hosts: dgxspark_rollout_order
  gather_facts: false
  serial: "{{ hostvars['localhost'].__rollout_batches | map('length') | list }}"
  tasks:
    - ansible.builtin.debug:
        msg: "BATCH {{ ansible_play_batch | to_json }}"
      run_once: true
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    path = tmp_path_factory.mktemp("batches")
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    hosts = {name: dict(local, **({"vllm_server_cluster": CLUSTER[name]} if name in CLUSTER else {})) for name in ORDER}
    inventory = {"all": {"children": {
        "spark": {"hosts": hosts},
        "pair": {"hosts": {"a1": {}, "a2": {}}},
        "trio": {"hosts": {"t1": {}, "t2": {}, "t3": {}}}}}}
    (path / "inventory.yml").write_text(json.dumps(inventory))
    (path / "play.yml").write_text(PLAYBOOK)
    (path / "ansible.cfg").write_text("[defaults]\n")  # an empty configuration: Ansible's defaults
    return path


def batches(work, size):
    # Run in the work directory, with the default callback and JSON results whatever the caller's ansible.cfg or
    # ANSIBLE_CONFIG says (scripts/test.sh sets one with YAML results, which fold long lines).
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".cache" / "collections"), ANSIBLE_NOCOLOR="1",
               PATH="%s:%s" % (BIN, os.environ.get("PATH", "/usr/bin:/bin")), ANSIBLE_CONFIG=str(work / "ansible.cfg"),
               ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default", ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(work / "inventory.yml"), str(work / "play.yml"),
                           "-e", "dgxspark_rollout_batch_size=%s" % size], capture_output=True, text=True, env=env, cwd=work,
                          check=False, timeout=300)
    out = proc.stdout + proc.stderr
    return proc.returncode, out, [json.loads(b) for b in re.findall(r'BATCH (\[[^\]]*\])', out.replace('\\"', '"'))]


@pytest.mark.parametrize("size, expected", [
    # One host per batch: each cluster is still one batch, never split.
    ("1", [["s1"], ["a1", "a2"], ["s2"], ["t1", "t2", "t3"]]),
    # Two: a single host and a pair do not fit together; the trio is bigger than a batch and goes alone.
    ("2", [["s1"], ["a1", "a2"], ["s2"], ["t1", "t2", "t3"]]),
    ("3", [["s1", "a1", "a2"], ["s2"], ["t1", "t2", "t3"]]),
    # A percentage of the 7 hosts: 60% is 4 hosts (rounded down, as Ansible's serial does).
    ("60%", [["s1", "a1", "a2", "s2"], ["t1", "t2", "t3"]]),
    ("7", [ORDER[:1] + ["a1", "a2", "s2", "t1", "t2", "t3"]]),
])
def test_batches_hold_whole_clusters_in_the_inventory_order(work, size, expected):
    rc, out, seen = batches(work, size)
    assert rc == 0, out[-3000:]
    assert seen == expected, out[-3000:]
    assert sorted(sum(seen, [])) == sorted(ORDER)


@pytest.mark.parametrize("size", ["0", "two", "-1", "0%"])
def test_a_batch_size_that_is_not_a_count_or_a_percentage_is_refused_naming_it(work, size):
    rc, out, seen = batches(work, size)
    assert rc != 0 and not seen
    assert re.search(r"dgxspark_rollout_batch_size=%s\s+is\s+not\s+a\s+number\s+of\s+hosts" % re.escape(size), out), out[-3000:]
