"""Run one molecule scenario (create, converge, idempotence, verify, destroy) and fail with the tail of its log.

The scenarios run real roles in systemd containers of the locally built Debian image
(scripts/lib.sh: ensure_image). Each one's full log goes to tests/output/molecule-<name>.log.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))
OUTPUT = ROOT / "tests" / "output"
# The scenarios that serve with the real vLLM's CPU build, the longest first: test_serving_scenarios.py runs them,
# test_scenarios.py the others. Under scripts/test.sh's two xdist workers the two files run side by side.
SERVING = ["fleet", "vllm_server", "host_prep"]


def run_scenario(scenario):
    OUTPUT.mkdir(parents=True, exist_ok=True)
    log = OUTPUT / ("molecule-%s.log" % scenario)
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
    with log.open("w") as handle:
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "molecule"), "test", "-s", scenario],
            cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, env=env, check=False,
        )
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-80:]
        pytest.fail("molecule test -s %s failed (rc=%d); last lines of %s:\n%s"
                    % (scenario, proc.returncode, log, "\n".join(tail)))
