#!/usr/bin/env bash
# The tuning experiments of benchmarks/results/fleet/README.md, on the hosts that
# `python3 benchmarks/fleet.py sweep --sizes 1,8 --keep ...` left running: no-op converges of site.yml
# with one connection or execution setting changed at a time. Not part of CI.
# Usage: bash benchmarks/fleet_tuning.sh [REPEAT]   (with the toolchain active, see benchmarks/fleet.py)
set -euo pipefail
cd "$(dirname "$0")/.."
repeat="${1:-2}"
run() { python3 benchmarks/fleet.py rerun --sizes 1,8 --repeat "$repeat" "$@"; }

run --label noop-committed-settings
run --label noop-no-pipelining --env ANSIBLE_PIPELINING=False
# ansible.cfg's ssh_args without ControlMaster/ControlPersist: a new SSH connection for every task.
run --label noop-no-controlpersist --env "ANSIBLE_SSH_ARGS=-o ControlMaster=no"
run --label noop-forks-5 --env ANSIBLE_FORKS=5
run --label noop-poll-10ms --env ANSIBLE_INTERNAL_POLL_INTERVAL=0.01
python3 benchmarks/fleet.py facts --sizes 1,8 --repeat 3 --label facts-gathering
