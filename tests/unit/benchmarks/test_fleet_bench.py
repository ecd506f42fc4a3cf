"""The log parsing of benchmarks/fleet.py: what it counts must be what Ansible printed.

The inputs are in the layout of ansible-core 2.19's default callback with ansible.posix.profile_tasks
enabled, as benchmarks/fleet.py runs it (copied from a real run's log and cut down).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "fleet_bench", Path(__file__).resolve().parents[3] / "benchmarks" / "fleet.py")
fleet = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(fleet)

STAMP = "Saturday 21 November 2026  12:20:33 +0000 (0:00:00.044)       0:01:14.673 ***** \n"

LOG = (
    "PLAY [Build, verify and install vLLM's FA2 library with native SM12x code] *****\n\n"
    "TASK [dgxspark.vllm.fa2_native : Group the hosts that need the same build] *****\n" + STAMP
    + "changed: [h-0]\nchanged: [h-1]\nchanged: [h-2]\n\n"
    "TASK [dgxspark.vllm.fa2_native : Start the build of the _vllm_fa2_C target in the background] ***\n" + STAMP
    + "skipping: [h-1]\nskipping: [h-2]\nchanged: [h-0]\n\n"
    "TASK [dgxspark.vllm.fa2_native : Show where the build writes its log] **********\n" + STAMP
    + "ok: [h-0] => \n    msg: 'h-0: building _vllm_fa2_C ... changed: [h-9]'\n\n"
    "PLAY [Serve the model with vLLM] ***********************************************\n\n"
    "TASK [dgxspark.vllm.vllm_server : Write the systemd unit] **********************\n" + STAMP
    + "changed: [h-1]\n\n"
    "PLAY RECAP *********************************************************************\n"
    "h-0                        : ok=163  changed=34   unreachable=0    failed=0    skipped=64   rescued=0    ignored=0   \n"
    "h-1                        : ok=150  changed=30   unreachable=0    failed=1    skipped=70   rescued=0    ignored=0   \n"
    "h-2                        : ok=150  changed=29   unreachable=1    failed=0    skipped=70   rescued=0    ignored=0   \n\n"
    "TASKS RECAP ********************************************************************\n" + STAMP
    + "=============================================================================== \n"
    "dgxspark.vllm.vllm_venv : Install the build prerequisites with apt ----- 23.80s\n"
    "dgxspark.vllm.fa2_native : Wait for the build to end, at most one progress interval --- 5.14s\n"
    "dgxspark.vllm.vllm_venv : Install the extra packages with uv ------------ 6.01s\n"
)


def test_recap_counts_per_host():
    recap = fleet.parse_recap(LOG)
    assert recap == {
        "h-0": {"ok": 163, "changed": 34, "unreachable": 0, "failed": 0, "skipped": 64},
        "h-1": {"ok": 150, "changed": 30, "unreachable": 0, "failed": 1, "skipped": 70},
        "h-2": {"ok": 150, "changed": 29, "unreachable": 1, "failed": 0, "skipped": 70},
    }


def test_recap_of_a_log_without_one_is_empty():
    assert fleet.parse_recap("ERROR! the playbook could not be found\n") == {}


def test_compiling_hosts_are_those_changed_in_the_build_task_only():
    # h-1 and h-2 changed in other tasks, and a message text that looks like a result line is not one.
    assert fleet.hosts_changed_in(LOG, fleet.BUILD_TASK) == ["h-0"]


def test_no_compile_when_the_build_task_is_skipped_everywhere():
    text = LOG.replace("changed: [h-0]\n\nTASK [dgxspark.vllm.fa2_native : Show", "skipping: [h-0]\n\nTASK [dgxspark.vllm.fa2_native : Show")
    assert fleet.hosts_changed_in(text, fleet.BUILD_TASK) == []


def test_every_compiling_host_is_counted():
    text = LOG.replace("skipping: [h-1]\nskipping: [h-2]\n", "changed: [h-2]\nchanged: [h-1]\n")
    assert fleet.hosts_changed_in(text, fleet.BUILD_TASK) == ["h-0", "h-1", "h-2"]


def test_the_task_in_the_last_play_ends_at_the_recap():
    assert fleet.hosts_changed_in(LOG, "Write the systemd unit") == ["h-1"]


def test_profile_summary_sorted_slowest_first():
    assert fleet.profile_top(LOG, limit=2) == [
        ["dgxspark.vllm.vllm_venv : Install the build prerequisites with apt", 23.8],
        ["dgxspark.vllm.vllm_venv : Install the extra packages with uv", 6.01],
    ]


@pytest.mark.parametrize("value,base,expected", [(48.0, 24.0, 2.0), (10.0, 30.0, 0.33)])
def test_ratio(value, base, expected):
    assert fleet.ratio(value, base) == expected


def test_ratio_against_zero_is_not_a_number():
    assert math.isnan(fleet.ratio(5.0, 0.0))


def test_env_pairs_keep_equals_signs_in_values():
    assert fleet.parse_env(["ANSIBLE_SSH_ARGS=-o ControlMaster=no", "ANSIBLE_FORKS=5"]) == {
        "ANSIBLE_SSH_ARGS": "-o ControlMaster=no", "ANSIBLE_FORKS": "5"}


def test_env_without_equals_is_refused():
    with pytest.raises(SystemExit, match="ANSIBLE_FORKS"):
        fleet.parse_env(["ANSIBLE_FORKS"])
