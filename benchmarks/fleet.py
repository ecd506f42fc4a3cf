"""Fleet benchmark: what site.yml costs as the fleet grows, on simulated hosts (issue 7).

A simulated Spark host is a systemd container of the molecule image with OpenSSH added (image
local/dgxspark-debian-ssh:bookworm, made here from local/dgxspark-debian:bookworm and Debian's
openssh-server package). Ansible reaches it over real SSH, as it reaches a real fleet, with the
settings of ansible.cfg. There is no GPU (dgxspark_require_gpu=false); the controller's CUDA 13.0
toolkit is mounted read-only, so fa2_native builds the test CUDA project
(tests/fixtures/fa2_test_project, a STAND-IN for the flash-attention tree) with the real nvcc, and
vllm_server runs tests/fixtures/openai_stand_in.py, a STAND-IN for the vLLM server. The venv is the
real vLLM 0.33.0 wheel with CPU torch from a local wheelhouse, as in molecule/default.

Subcommands (run from the repository root with the toolchain active, see the README):

  sweep   For each N in --sizes: start N fresh hosts, run the first full converge of site.yml,
          then an immediate second converge. Records wall time, the PLAY RECAP, how many hosts
          compiled the FA2 library (from the log and from the build logs on the hosts), and the CPU
          time spent by the controller and by the hosts. --keep leaves the hosts running.
  rerun   Converge the hosts a `sweep --keep` left running again, --repeat times, with extra
          settings (--env KEY=VALUE for ansible-playbook): the tuning experiments on no-op runs.
  facts   Ad-hoc setup on the kept hosts, all facts against the subset the roles gather.
  report  Render every result file in --out as one Markdown file (README.md) and a PNG plot.
  clean   Remove the benchmark's containers.

Each simulated host takes about 4.1 GB of disk once converged (the venv is 3.0 GB), so 8 hosts need
about 33 GB free; without --keep a size's hosts are removed before the next size starts.

This measures; it asserts nothing and is not part of CI. Results are JSON files in --out
(benchmarks/results/fleet by default); full Ansible logs go to .cache/fleet-bench/logs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE_IMAGE = os.environ.get("DGX_IMAGE", "local/dgxspark-debian:bookworm")
SSH_IMAGE = os.environ.get("DGX_SSH_IMAGE", "local/dgxspark-debian-ssh:bookworm")
WORK = ROOT / ".cache" / "fleet-bench"
PREFIX = "dgxbench"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

RECAP_RE = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)", re.M)
# fa2_native starts the compile in this task (roles/fa2_native/tasks/build.yml); it reports
# changed on the host that compiles and does not run on the others.
BUILD_TASK = "Start the build of the _vllm_fa2_C target in the background"
TASK_RE = re.compile(r"^TASK \[(?P<name>[^\]]*)\]", re.M)
# ansible.posix.profile_tasks' summary lines: "role : task ---- 12.34s"
PROFILE_RE = re.compile(r"^(?P<task>.+?) -{3,} (?P<secs>\d+\.\d+)s$", re.M)


# ----------------------------------------------------------------------------------------------
# Parsing (pure functions; tests/unit/test_fleet_bench.py covers them)

def parse_recap(text: str) -> dict:
    """{host: {ok, changed, unreachable, failed, skipped}} from the PLAY RECAP of a log."""
    return {m.group("host"): {k: int(v) for k, v in m.groupdict().items() if k != "host"}
            for m in RECAP_RE.finditer(text)}


def task_sections(text: str):
    """Yield (task name, body) for every TASK block of a default-callback log."""
    marks = list(TASK_RE.finditer(text))
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        body = text[mark.end():end]
        cut = body.find("\nPLAY ")
        yield mark.group("name"), body if cut < 0 else body[:cut]


def hosts_changed_in(text: str, task_suffix: str) -> list[str]:
    """Hosts that reported 'changed' in the task whose name ends with task_suffix."""
    hosts = set()
    for name, body in task_sections(text):
        if name.split(" : ")[-1] == task_suffix:
            hosts.update(re.findall(r"^changed: \[([^\]]+)\]", body, re.M))
    return sorted(hosts)


def profile_top(text: str, limit: int = 15) -> list[list]:
    """The slowest tasks as [[task, seconds], ...] from profile_tasks' summary."""
    rows = [[m.group("task").strip(), float(m.group("secs"))] for m in PROFILE_RE.finditer(text)]
    rows.sort(key=lambda r: -r[1])
    return rows[:limit]


def ratio(value: float, base: float) -> float:
    return round(value / base, 2) if base else float("nan")


# ----------------------------------------------------------------------------------------------
# Docker and the simulated hosts

def sh(argv, check=True, **kwargs) -> str:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False, **kwargs)
    if check and proc.returncode != 0:
        raise SystemExit("command failed (rc=%d): %s\n%s%s"
                         % (proc.returncode, " ".join(map(str, argv)), proc.stdout[-2000:], proc.stderr[-2000:]))
    return proc.stdout


def ensure_ssh_image() -> None:
    """The molecule image plus openssh-server, committed locally (Debian's packages only)."""
    if subprocess.run(["docker", "image", "inspect", SSH_IMAGE], capture_output=True, check=False).returncode == 0:
        return
    print("building %s from %s (apt-get install openssh-server)" % (SSH_IMAGE, BASE_IMAGE), flush=True)
    name = PREFIX + "-image"
    sh(["docker", "rm", "-f", name], check=False)
    mounts = ["-v", "%s:%s:ro" % (CA_BUNDLE, CA_BUNDLE)] if os.path.isfile(CA_BUNDLE) else []
    sh(["docker", "run", "--name", name, *mounts, BASE_IMAGE, "bash", "-c",
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
        "openssh-server >/dev/null && systemctl enable ssh && ssh -V"])
    sh(["docker", "commit", "-c", "ENV container=docker", "-c", 'CMD ["/lib/systemd/systemd"]', name, SSH_IMAGE])
    sh(["docker", "rm", "-f", name])


def ensure_inputs() -> None:
    """The wheelhouses molecule/default uses (cached under .cache; a second call downloads nothing)."""
    sh([sys.executable, ROOT / "tests" / "wheelhouse.py", "--dest", ROOT / ".cache" / "wheelhouse" / "host_prep"])
    sh([sys.executable, ROOT / "tests" / "integration" / "fa4_shim" / "realvllm.py", "wheelhouse"])


def ensure_key() -> Path:
    key = WORK / "id_ed25519"
    if not key.is_file():
        WORK.mkdir(parents=True, exist_ok=True)
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "dgxspark-fleet-bench", "-f", key])
    return key


def host_names(size: int) -> list[str]:
    return ["%s-n%d-%d" % (PREFIX, size, i) for i in range(size)]


def remove_hosts(names) -> None:
    if names:
        subprocess.run(["docker", "rm", "-f", *names], capture_output=True, check=False)


def bench_containers() -> list[str]:
    out = sh(["docker", "ps", "-a", "--filter", "name=^%s-n" % PREFIX, "--format", "{{.Names}}"])
    return sorted(out.split())


def start_hosts(size: int, key: Path) -> list[dict]:
    names = host_names(size)
    remove_hosts(names)
    volumes = [
        "/sys/fs/cgroup:/sys/fs/cgroup:ro",
        "/usr/local/cuda-13.0:/usr/local/cuda:ro",
        "%s:/srv/wheelhouse:ro" % (ROOT / ".cache" / "wheelhouse" / "host_prep"),
        "%s:/srv/fa4-wheelhouse:ro" % (ROOT / ".cache" / "fa4-real" / "wheelhouse"),
        "%s:/srv/fa4-standin-kernel:ro" % (ROOT / "tests" / "integration" / "fa4_shim" / "standin_kernel"),
    ]
    if os.path.isfile(CA_BUNDLE):
        volumes.append("%s:%s:ro" % (CA_BUNDLE, CA_BUNDLE))
    for name in names:
        argv = ["docker", "run", "-d", "--name", name, "--hostname", name, "--cap-add", "SYS_ADMIN",
                "--stop-signal", "SIGRTMIN+3"]
        for fs in ("/run", "/run/lock", "/tmp"):
            argv += ["--tmpfs", fs]
        for vol in volumes:
            argv += ["-v", vol]
        sh(argv + [SSH_IMAGE, "/lib/systemd/systemd"])
    hosts = []
    for name in names:
        # What molecule/default's prepare puts in place: the FA2 source stand-in, the server stand-in
        # and root's authorized key.
        sh(["docker", "exec", name, "systemctl", "is-system-running", "--wait"], check=False)
        sh(["docker", "exec", name, "mkdir", "-p", "/opt/src", "/root/.ssh"])
        sh(["docker", "cp", ROOT / "tests" / "fixtures" / "fa2_test_project", "%s:/opt/src/flash-attention" % name])
        sh(["docker", "cp", ROOT / "tests" / "fixtures" / "openai_stand_in.py", "%s:/usr/local/bin/openai-stand-in" % name])
        sh(["docker", "cp", str(key) + ".pub", "%s:/root/.ssh/authorized_keys" % name])
        sh(["docker", "exec", name, "chown", "-R", "root:root", "/root/.ssh", "/opt/src/flash-attention",
            "/usr/local/bin/openai-stand-in"])
        sh(["docker", "exec", name, "chmod", "0755", "/usr/local/bin/openai-stand-in"])
        address = sh(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name]).strip()
        cid = sh(["docker", "inspect", "-f", "{{.Id}}", name]).strip()
        hosts.append({"name": name, "address": address, "id": cid})
    for host in hosts:
        wait_for_ssh(host, key)
    return hosts


def ssh_options(key: Path) -> list[str]:
    return ["-i", str(key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]


def wait_for_ssh(host: dict, key: Path) -> None:
    for _attempt in range(60):
        if subprocess.run(["ssh", *ssh_options(key), "root@" + host["address"], "true"],
                          capture_output=True, check=False).returncode == 0:
            return
        time.sleep(1)
    raise SystemExit("%s (%s): sshd did not answer within 60 s" % (host["name"], host["address"]))


def cpu_seconds(container_id: str) -> float | None:
    """CPU time used so far by every process of a container (cgroup v1 or v2)."""
    for path in ("/sys/fs/cgroup/cpuacct/docker/%s/cpuacct.usage" % container_id,
                 "/sys/fs/cgroup/cpu,cpuacct/docker/%s/cpuacct.usage" % container_id):
        if os.path.isfile(path):
            return int(Path(path).read_text()) / 1e9
    for path in ("/sys/fs/cgroup/system.slice/docker-%s.scope/cpu.stat" % container_id,
                 "/sys/fs/cgroup/docker/%s/cpu.stat" % container_id):
        if os.path.isfile(path):
            for line in Path(path).read_text().splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / 1e6
    return None


def build_logs_on(host: dict) -> list[str]:
    """fa2_native's build logs on a host: only a host that compiled has one."""
    out = sh(["docker", "exec", host["name"], "sh", "-c",
              "ls /var/lib/dgxspark/fa2_native/logs/build-*.log 2>/dev/null || true"])
    return out.split()


# ----------------------------------------------------------------------------------------------
# Running site.yml

def write_inventory(path: Path, hosts: list[dict], key: Path, fleet_cache: Path) -> None:
    lines = ["---", "spark:", "  hosts:"]
    for host in hosts:
        lines += ["    %s:" % host["name"], "      ansible_host: %s" % host["address"]]
    lines += [
        "  vars:",
        "    ansible_user: root",
        "    ansible_ssh_private_key_file: %s" % key,
        "    ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
        "    ansible_python_interpreter: /usr/bin/python3",
        "    fa2_native_fleet_cache: %s" % fleet_cache,
    ]
    path.write_text("\n".join(lines) + "\n")


def playbook_env(extra: dict, control_dir: Path) -> dict:
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".cache" / "collections"),
        "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "NO_COLOR": "1",
        # Per-task timings in the log (printed after the recap); ansible.posix comes with the toolchain.
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
        "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "40",
        # One SSH control socket directory per set of hosts: a recreated container may get the address
        # of a removed one, and a master connection to that must not be reused.
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir),
    })
    env.update(extra)
    return env


def converge(size: int, hosts: list[dict], env: dict, log: Path) -> dict:
    inventory = WORK / ("n%d" % size) / "inventory.yml"
    before_cpu = {h["name"]: cpu_seconds(h["id"]) for h in hosts}
    before_self = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.run(["ansible-playbook", "-i", str(inventory), "-e", "@" + str(ROOT / "benchmarks" / "fleet-vars.yml"),
                           "site.yml"], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - start
    after_self = resource.getrusage(resource.RUSAGE_CHILDREN)
    after_cpu = {h["name"]: cpu_seconds(h["id"]) for h in hosts}
    text = proc.stdout + proc.stderr
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(text)
    recap = parse_recap(proc.stdout)
    host_cpu = [after_cpu[n] - before_cpu[n] for n in after_cpu if after_cpu[n] is not None and before_cpu[n] is not None]
    return {
        "rc": proc.returncode,
        "wall_s": round(wall, 1),
        "changed": sum(r["changed"] for r in recap.values()),
        "ok": sum(r["ok"] for r in recap.values()),
        "failed": sum(r["failed"] + r["unreachable"] for r in recap.values()),
        "hosts_in_recap": len(recap),
        "compiled_per_log": hosts_changed_in(proc.stdout, BUILD_TASK),
        "controller_cpu_s": round((after_self.ru_utime + after_self.ru_stime)
                                  - (before_self.ru_utime + before_self.ru_stime), 1),
        "hosts_cpu_s": round(sum(host_cpu), 1) if host_cpu else None,
        "slowest_tasks": profile_top(proc.stdout),
        "log": str(log.relative_to(ROOT)),
        "tail": "" if proc.returncode == 0 else text[-3000:],
    }


def describe_run(size: int, what: str, run: dict) -> str:
    return ("N=%d %-6s %7.1f s rc=%d changed=%d failed=%d FA2 compiled on %d host(s); CPU controller %.1f s, hosts %s s"
            % (size, what, run["wall_s"], run["rc"], run["changed"], run["failed"], len(run["compiled_per_log"]),
               run["controller_cpu_s"], run["hosts_cpu_s"]))


def machine() -> dict:
    return {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "load_average_at_start": round(os.getloadavg()[0], 2),
            "mem_total_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def parse_env(items) -> dict:
    env = {}
    for item in items:
        if "=" not in item:
            raise SystemExit("--env %r: expected KEY=VALUE" % item)
        key, value = item.split("=", 1)
        env[key] = value
    return env


def save(out: Path, label: str, data: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / ("%s.json" % label)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def cmd_sweep(opts) -> int:
    sizes = [int(s) for s in opts.sizes.split(",")]
    extra = parse_env(opts.env)
    ensure_ssh_image()
    ensure_inputs()
    key = ensure_key()
    data = {"kind": "sweep", "label": opts.label, "env": extra, "when": now(), **machine(),
            "command": " ".join(sys.argv), "results": []}
    previous = Path(opts.out) / ("%s.json" % opts.label)
    if opts.append and previous.is_file():
        # Measure some sizes again (e.g. after a failure) and keep the others' rows.
        old = json.loads(previous.read_text())
        data["results"] = [r for r in old["results"] if r["hosts"] not in sizes]
        data["command"] = old["command"] + "; " + data["command"]
    for size in sizes:
        control_dir = WORK / ("n%d" % size) / "cp"
        shutil.rmtree(WORK / ("n%d" % size), ignore_errors=True)
        control_dir.mkdir(parents=True)
        hosts = start_hosts(size, key)
        write_inventory(WORK / ("n%d" % size) / "inventory.yml", hosts, key, WORK / ("n%d" % size) / "fa2-fleet-cache")
        (WORK / ("n%d" % size) / "hosts.json").write_text(json.dumps(hosts))
        env = playbook_env(extra, control_dir)
        row = {"hosts": size}
        for what in ("first", "second"):
            row[what] = converge(size, hosts, env, WORK / "logs" / ("%s-n%d-%s.log" % (opts.label, size, what)))
            print(describe_run(size, what, row[what]), flush=True)
        row["hosts_with_build_log"] = sum(1 for h in hosts if build_logs_on(h))
        data["results"].append(row)
        data["results"].sort(key=lambda r: r["hosts"])
        save(Path(opts.out), opts.label, data)
        if not opts.keep:
            remove_hosts([h["name"] for h in hosts])
    print("wrote %s" % save(Path(opts.out), opts.label, data))
    return 0


def cmd_rerun(opts) -> int:
    sizes = [int(s) for s in opts.sizes.split(",")]
    extra = parse_env(opts.env)
    data = {"kind": "rerun", "label": opts.label, "env": extra, "when": now(), **machine(),
            "command": " ".join(sys.argv), "results": []}
    for size in sizes:
        state = WORK / ("n%d" % size) / "hosts.json"
        if not state.is_file():
            raise SystemExit("no hosts kept for N=%d; run `sweep --sizes %d --keep` first" % (size, size))
        hosts = json.loads(state.read_text())
        (WORK / ("n%d" % size) / "cp").mkdir(parents=True, exist_ok=True)
        env = playbook_env(extra, WORK / ("n%d" % size) / "cp")
        runs = []
        for i in range(opts.repeat):
            if opts.cold:
                # Close the SSH master connections: every run then pays for its connections.
                shutil.rmtree(WORK / ("n%d" % size) / "cp", ignore_errors=True)
                (WORK / ("n%d" % size) / "cp").mkdir(parents=True)
            run = converge(size, hosts, env, WORK / "logs" / ("%s-n%d-rerun%d.log" % (opts.label, size, i)))
            print(describe_run(size, "rerun", run), flush=True)
            runs.append(run)
        walls = [r["wall_s"] for r in runs]
        data["results"].append({"hosts": size, "runs": runs, "median_wall_s": statistics.median(walls),
                                "min_wall_s": min(walls), "max_wall_s": max(walls),
                                "changed": [r["changed"] for r in runs]})
        save(Path(opts.out), opts.label, data)
    print("wrote %s" % save(Path(opts.out), opts.label, data))
    return 0


def cmd_facts(opts) -> int:
    """What limiting fact gathering buys: ad-hoc setup on the kept hosts, all facts vs the roles' subset."""
    data = {"kind": "facts", "label": opts.label, "env": {}, "when": now(), **machine(),
            "command": " ".join(sys.argv), "results": []}
    variants = {"all facts (gather_facts: true)": [],
                "the roles' subset (distribution, platform)": ["-a", "gather_subset=!all,!min,distribution,platform"]}
    for size in [int(s) for s in opts.sizes.split(",")]:
        inventory = WORK / ("n%d" % size) / "inventory.yml"
        if not inventory.is_file():
            raise SystemExit("no hosts kept for N=%d; run `sweep --sizes %d --keep` first" % (size, size))
        env = playbook_env({}, WORK / ("n%d" % size) / "cp")
        for name, args in variants.items():
            walls, cpus = [], []
            for _repeat in range(opts.repeat):
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.monotonic()
                proc = subprocess.run(["ansible", "-i", str(inventory), "spark", "-b", "-m", "ansible.builtin.setup", *args],
                                      cwd=ROOT, env=env, capture_output=True, text=True, check=False)
                walls.append(round(time.monotonic() - start, 2))
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpus.append(round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2))
                if proc.returncode != 0:
                    raise SystemExit("setup failed on N=%d:\n%s" % (size, (proc.stdout + proc.stderr)[-2000:]))
            row = {"hosts": size, "variant": name, "wall_s": walls, "controller_cpu_s": cpus,
                   "median_wall_s": statistics.median(walls)}
            print("N=%d %-45s wall %s s, controller CPU %s s" % (size, name, walls, cpus), flush=True)
            data["results"].append(row)
    print("wrote %s" % save(Path(opts.out), opts.label, data))
    return 0


def facts_table(data: dict) -> list[str]:
    lines = ["| hosts | gathering | wall (s), each run | median (s) | controller CPU (s), each run |", "|---:|---|---|---:|---|"]
    for r in data["results"]:
        lines.append("| %d | %s | %s | %.2f | %s |"
                     % (r["hosts"], r["variant"], ", ".join("%.2f" % w for w in r["wall_s"]),
                        r["median_wall_s"], ", ".join("%.2f" % c for c in r["controller_cpu_s"])))
    return lines


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------------------------------------
# Report

def sweep_table(data: dict) -> list[str]:
    rows = data["results"]
    base1, base2 = rows[0]["first"]["wall_s"], rows[0]["second"]["wall_s"]
    lines = [
        "| hosts | 1st converge (s) | t(N)/t(1) | 2nd converge (s) | t(N)/t(1) | changed in 2nd | FA2 compiles | "
        "controller CPU 1st / 2nd (s) | hosts' CPU 1st / 2nd (s) | failed |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        first, second = r["first"], r["second"]
        compiles = len(first["compiled_per_log"]) + len(second["compiled_per_log"])
        lines.append("| %d | %.1f | %.2f | %.1f | %.2f | %d | %d (build logs on %d) | %.1f / %.1f | %s / %s | %d |" % (
            r["hosts"], first["wall_s"], ratio(first["wall_s"], base1), second["wall_s"],
            ratio(second["wall_s"], base2), second["changed"], compiles, r.get("hosts_with_build_log", -1),
            first["controller_cpu_s"], second["controller_cpu_s"], first["hosts_cpu_s"], second["hosts_cpu_s"],
            first["failed"] + second["failed"]))
    return lines


def rerun_table(data: dict) -> list[str]:
    rows = data["results"]
    base = rows[0]["median_wall_s"]
    lines = ["| hosts | runs | median (s) | min-max (s) | t(N)/t(1) | changed | controller CPU (s, median) |",
             "|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        lines.append("| %d | %d | %.1f | %.1f-%.1f | %.2f | %s | %.1f |" % (
            r["hosts"], len(r["runs"]), r["median_wall_s"], r["min_wall_s"], r["max_wall_s"],
            ratio(r["median_wall_s"], base), ", ".join(map(str, r["changed"])),
            statistics.median(x["controller_cpu_s"] for x in r["runs"])))
    return lines


def render(out: Path, order: list[str]) -> str:
    files = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}
    labels = [l for l in order if l in files] + [l for l in files if l not in order]
    has_sweep = any(data["kind"] == "sweep" for data in files.values())
    lines = ["# Fleet benchmark results", "",
             "Generated by `python3 benchmarks/fleet.py report` from the JSON files beside this one.",
             "Simulated hosts: systemd containers on one machine, reached over SSH; see benchmarks/fleet.py.", ""]
    lines += ["![wall time against hosts](fleet.png)", ""] if has_sweep else []
    for label in labels:
        data = files[label]
        env = ", ".join("%s=%s" % kv for kv in data["env"].items()) or "none (ansible.cfg as committed)"
        lines += ["## %s" % label, "",
                  "`%s` at %s; %s CPUs, load average at start %.2f; extra settings: %s." % (
                      data["command"], data["when"], data["cpus"], data["load_average_at_start"], env), ""]
        lines += {"sweep": sweep_table, "rerun": rerun_table, "facts": facts_table}[data["kind"]](data)
        lines.append("")
    (out / "README.md").write_text("\n".join(lines))
    if has_sweep:
        plot(files, labels, out / "fleet.png")
    return "\n".join(lines)


def plot(files: dict, labels: list[str], png: Path) -> None:
    target = ROOT / ".cache" / "bench-pkgs"
    if not (target / "matplotlib").is_dir():
        sh([sys.executable, "-m", "pip", "install", "-q", "--target", target, "matplotlib==3.11.2"])
    sys.path.insert(0, str(target))
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    sweeps = [l for l in labels if files[l]["kind"] == "sweep"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for label in sweeps:
        rows = files[label]["results"]
        sizes = [r["hosts"] for r in rows]
        axes[0].plot(sizes, [r["first"]["wall_s"] for r in rows], "o-", label=label)
        axes[1].plot(sizes, [r["second"]["wall_s"] for r in rows], "s-", label=label)
    for ax, title in zip(axes, ("first converge of site.yml", "second converge (no-op)")):
        ax.set_title(title)
        ax.set_xlabel("hosts")
        ax.set_ylabel("wall time (s)")
        ax.set_xticks([1, 2, 4, 8])
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("dgxspark.vllm site.yml on N simulated Spark hosts (one 2-core machine)")
    fig.tight_layout()
    fig.savefig(png, dpi=100)


def cmd_report(opts) -> int:
    print(render(Path(opts.out), opts.order.split(",") if opts.order else []))
    return 0


def cmd_clean(_opts) -> int:
    remove_hosts(bench_containers())
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("sweep", "rerun", "facts", "report", "clean"):
        p = sub.add_parser(name)
        p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fleet"))
        if name in ("sweep", "rerun", "facts"):
            p.add_argument("--label", required=True, help="name of the result file")
            p.add_argument("--sizes", default="1,2,4,8" if name == "sweep" else "1,8")
            p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                           help="extra environment for ansible-playbook (repeatable)")
        if name == "sweep":
            p.add_argument("--keep", action="store_true", help="leave the hosts running for `rerun`")
            p.add_argument("--append", action="store_true",
                           help="keep the rows of other sizes already in the label's result file")
        if name in ("rerun", "facts"):
            p.add_argument("--repeat", type=int, default=3)
            p.add_argument("--cold", action="store_true", help="close SSH master connections before each run")
        if name == "report":
            p.add_argument("--order", default="", help="comma-separated labels, in the order to show them")
    opts = parser.parse_args()
    return {"sweep": cmd_sweep, "rerun": cmd_rerun, "facts": cmd_facts, "report": cmd_report,
            "clean": cmd_clean}[opts.cmd](opts)


if __name__ == "__main__":
    sys.exit(main())
