"""Benchmark: host preparation (uv, vllm_venv, cuda_env, page_cache) on one container host.

Uses the molecule scenario host_prep (a systemd container of the Debian 12 test image, the wheelhouse from
tests/wheelhouse.py mounted read-only) and reports:

- the wall time of the first converge on a fresh container (uv from PyPI, apt packages, the venv with the real
  vLLM 0.33.0 wheel, CPU torch, triton, CMake; the environment files; a page-cache drop);
- the wall time of a second converge with the same settings, run as molecule's idempotence step runs it
  (--skip-tags molecule-idempotence-notest), and its number of changed tasks, which must be 0;
- for information, a third converge that includes the page-cache drop: the drop is an action and reports
  changed=1 each time it happens, nothing else changes.

Not part of CI. Run from the repository root with the toolchain active:

    export DGX_VENV=/tmp/tc && source scripts/lib.sh && ensure_collection_link && activate_toolchain
    python benchmarks/host_prep.py [--keep]

Exit status 1 when the second converge changed anything. The figures also go to
benchmarks/results/host_prep-<UTC time>.log (JSON).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = "host_prep"
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def molecule(*args) -> tuple[float, str]:
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", NO_COLOR="1", PY_COLORS="0", ANSIBLE_FORCE_COLOR="0")
    start = time.monotonic()
    proc = subprocess.run(["molecule", *args], cwd=ROOT, capture_output=True, text=True, env=env, check=False)
    elapsed = time.monotonic() - start
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.stderr.write(out[-6000:])
        raise SystemExit("molecule %s failed (rc=%d)" % (" ".join(args), proc.returncode))
    return elapsed, out


def recap(out: str) -> dict:
    hosts = {m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)), "failed": int(m.group(5))}
             for m in RECAP.finditer(out)}
    if len(hosts) != 1:
        raise SystemExit("expected one host in the play recap, found %s" % sorted(hosts))
    return next(iter(hosts.values()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the container running afterwards")
    args = parser.parse_args()

    figures = {"scenario": SCENARIO, "machine": "%s, %d CPUs" % (platform.machine(), os.cpu_count() or 0),
               "load_average_at_start": os.getloadavg()[0]}
    molecule("destroy", "-s", SCENARIO)
    try:
        figures["create_and_prepare_s"], _out = molecule("create", "-s", SCENARIO)
        molecule("prepare", "-s", SCENARIO)

        first_s, out = molecule("converge", "-s", SCENARIO)
        figures["first_converge_s"], figures["first_converge"] = first_s, recap(out)

        second_s, out = molecule("converge", "-s", SCENARIO, "--", "--skip-tags", "molecule-idempotence-notest")
        figures["second_converge_s"], figures["second_converge"] = second_s, recap(out)

        third_s, out = molecule("converge", "-s", SCENARIO)
        figures["third_converge_with_drop_s"], figures["third_converge_with_drop"] = third_s, recap(out)
    finally:
        if not args.keep:
            molecule("destroy", "-s", SCENARIO)

    figures["load_average_at_end"] = os.getloadavg()[0]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    # *.log under benchmarks/results is git-ignored: the figures are per machine.
    (results / ("host_prep-%s.log" % stamp)).write_text(json.dumps(figures, indent=1) + "\n")

    print("host_prep on one container (%s; load average %.1f -> %.1f)"
          % (figures["machine"], figures["load_average_at_start"], figures["load_average_at_end"]))
    print("  create + prepare (wheelhouse cached):   %6.1f s" % figures["create_and_prepare_s"])
    print("  first converge:                          %6.1f s  changed=%d"
          % (first_s, figures["first_converge"]["changed"]))
    print("  second converge (idempotence):           %6.1f s  changed=%d"
          % (second_s, figures["second_converge"]["changed"]))
    print("  third converge, page-cache drop included: %5.1f s  changed=%d (the drop)"
          % (third_s, figures["third_converge_with_drop"]["changed"]))
    return 0 if figures["second_converge"]["changed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
