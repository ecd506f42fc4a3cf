"""What the fleet scenario's test modules share: the tiny model's reference answer and the question asked of a server,
and site.yml's vllm_server play run over a cluster of the containers, with what its output says."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
REFERENCE = json.loads((ROOT / ".cache" / "tiny-model" / "current" / "reference.json").read_text())


def answer(host, port=8000, timeout=300):
    """The server's greedy answer to the smoke question, asked on the host itself (a testinfra host)."""
    body = json.dumps({"model": "tiny-llama", "messages": [{"role": "user", "content": REFERENCE["question"]}],
                       "max_tokens": REFERENCE["max_tokens"], "temperature": 0})
    out = host.check_output("python3 -c %s %s %s %s", "import sys, urllib.request; print(urllib.request.urlopen("
                            "urllib.request.Request('http://127.0.0.1:%s/v1/chat/completions' % sys.argv[2], "
                            "data=sys.argv[1].encode(), headers={'Content-Type': 'application/json'}), "
                            "timeout=float(sys.argv[3])).read().decode())", body, str(port), str(timeout))
    return json.loads(out)["choices"][0]["message"]["content"]


def site(work, source, limit, *extra):
    """site.yml, only its vllm_server play, on the hosts in limit, with the inventory source work/source beside
    molecule's; the output is kept in work/site-N.log. Returns (rc, output)."""
    env = dict(os.environ, ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], "-i", str(work / source),
                           str(ROOT / "site.yml"), "--tags", "vllm_server", "-l", ",".join(limit), *extra],
                          capture_output=True, text=True, env=env, check=False, timeout=2400)
    runs = sorted(work.glob("site-*.log"))
    (work / ("site-%d.log" % len(runs))).write_text(proc.stdout + proc.stderr)
    return proc.returncode, proc.stdout + proc.stderr


def recap(out, name):
    """The host's counts in the play recap (ok, changed, failed, ...)."""
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", re.search(r"^%s\s*:(.*)$" % re.escape(name), out, re.M).group(1))}


def says(pattern, out):
    """Whether the play's output holds the message (a regular expression): the callback folds long messages, so
    any space in the pattern matches any run of white space."""
    return re.search(pattern.replace(" ", r"\s+"), out) is not None


def address(host):
    """The container's IPv4 address on eth0 (a testinfra host)."""
    return host.check_output("ip -4 -o addr show dev eth0").split()[3].split("/")[0]


def megabytes(host, unit):
    """Resident memory (RSS) of the unit's processes, summed, in MiB."""
    return int(host.check_output("ps -eo rss=,cgroup= | awk '/%s/ {kib += $1} END {print kib + 0}'", unit.replace(".", "\\."))) // 1024
