"""Verify dgxspark.vllm.memory_guard in the vllm_server scenario: earlyoom from Debian's package, running with the
settings as set, and the real vLLM server's processes carrying the unit's OOMScoreAdjust and a name that earlyoom's
--prefer matches.

The kill test runs a second earlyoom, with the service's own command line, in a private PID and mount namespace
(unshare --pid --mount-proc), so that it sees and can kill only the test's own processes: a memory hog named like
the vLLM server's API process (python3, with the unit's oom_score_adj), a neighbour twice its size, and a stand-in
named sshd (/bin/sleep copied under that name; the container runs no sshd). earlyoom reads the HOST's
/proc/meminfo (24 GiB, shared with other work whose use moves it by hundreds of MiB a second), so filling memory
for real is neither safe nor repeatable here: in that namespace only, a STAND-IN /proc/meminfo (the host's lines
with MemAvailable set by the test) says when memory is low. Measured on this machine: a 700 MiB allocation did not
show in MemAvailable at all against that noise.
"""

from __future__ import annotations

import json
import re
import shlex

import pytest

PREFER = "^(VLLM::.*|python[0-9.]*|vllm)$"
AVOID = "^(sshd|systemd.*|init|dbus-daemon|journald|earlyoom)$"
ARGS = ["-M", "524288,102400", "-s", "100", "-r", "60", "--prefer", PREFER, "--avoid", AVOID]

# Runs as PID 1 of a new PID and mount namespace, with the service's earlyoom command line in $GUARD; prints one
# JSON line, then earlyoom's output. STAND-IN: /proc/meminfo is a file bound over it in this namespace only (the
# host's lines, MemAvailable set by the test): "plenty" (8 GiB), then "low" (400 MiB, under -M's 512 MiB SIGTERM
# threshold and over its 100 MiB SIGKILL one). The hog's SIGTERM handler writes "plenty" back before it exits, as
# the memory a killed process held comes back. Everything else is real: the processes and their memory, their
# oom_score, earlyoom's choice, its signal.
KILL_TEST = r"""
set -eu
d=$(mktemp -d /var/tmp/memory-guard.XXXXXX)  # /tmp is a noexec tmpfs here
trap 'rm -rf "$d"' EXIT
cp /proc/meminfo "$d/meminfo.host"
# Rewritten in place, one write of the same length, so that earlyoom never reads a file being rewritten.
meminfo() {
  awk -v kib="$1" '/^MemAvailable:/ {$2 = sprintf("%12d", kib)} {print}' "$d/meminfo.host" >"$d/meminfo.next"
  dd if="$d/meminfo.next" of="$d/meminfo" bs=64k conv=notrunc status=none
}
meminfo $((8 << 20))
mount --bind "$d/meminfo" /proc/meminfo
cp /bin/sleep "$d/sshd"
cp "$(readlink -f /usr/bin/python3)" "$d/neighbour"
hold='import signal, sys, time
def back(*_):
    open(sys.argv[3], "r+").write(open(sys.argv[4]).read())
    sys.exit(143)
if len(sys.argv) > 3:
    signal.signal(signal.SIGTERM, back)
b = b"x" * (int(sys.argv[1]) << 20)
open(sys.argv[2], "w").close()
time.sleep(120)'
wait_for() { for _ in $(seq 1 300); do [ -e "$1" ] && return 0; sleep 0.1; done; echo "no $1" >&2; exit 1; }
eval "set -- $GUARD"
"$@" >"$d/log" 2>&1 & guard=$!
for _ in $(seq 1 100); do grep -q '^sending SIGTERM when' "$d/log" && break; sleep 0.1; done
"$d/sshd" 120 & sshd=$!
"$d/neighbour" -c "$hold" 400 "$d/neighbour.ready" & neighbour=$!
cp "$d/meminfo" "$d/meminfo.plenty"
choom -n 500 -- python3 -c "$hold" 200 "$d/hog.ready" "$d/meminfo" "$d/meminfo.plenty" & hog=$!
wait_for "$d/neighbour.ready"
wait_for "$d/hog.ready"
meminfo $((400 << 10))
for _ in $(seq 1 100); do kill -0 "$hog" 2>/dev/null || break; sleep 0.1; done
wait "$hog" || true
sleep 2
alive() { kill -0 "$1" 2>/dev/null && echo true || echo false; }
printf '{"hog": %s, "neighbour": %s, "sshd": %s, "hog_alive": %s, "neighbour_alive": %s, "sshd_alive": %s}\n' \
  "$hog" "$neighbour" "$sshd" "$(alive "$hog")" "$(alive "$neighbour")" "$(alive "$sshd")"
kill "$guard" "$neighbour" "$sshd" 2>/dev/null || true
sed 's/^/LOG: /' "$d/log"
"""


def test_earlyoom_is_installed_running_and_configured_as_set(host):
    assert host.package("earlyoom").is_installed
    service = host.service("earlyoom")
    assert service.is_running and service.is_enabled
    # The drop-in's command line, word by word, as systemd parsed it (the regexes hold no spaces).
    exec_start = host.check_output("systemctl show --property=ExecStart --value earlyoom").replace("$$", "$")  # show escapes $
    argv = re.search(r"argv\[\]=(.*?) ;", exec_start).group(1).split(" ")
    assert argv == ["/usr/bin/earlyoom"] + ARGS, exec_start
    pid = int(host.check_output("systemctl show --property=MainPID --value earlyoom"))
    assert host.check_output("tr '\\0' '\\n' < /proc/%s/cmdline", str(pid)).split("\n") == ["/usr/bin/earlyoom"] + ARGS
    journal = host.check_output("journalctl --unit earlyoom --output cat --no-pager")
    assert "Preferring to kill process names that match regex '%s'" % PREFER in journal
    assert "Will avoid killing process names that match regex '%s'" % AVOID in journal


def test_the_vllm_servers_processes_are_first_in_line(host):
    """The real server's unit has OOMScoreAdjust=500 (vllm_server_oom_score_adjust), every process of it carries it,
    and each of their names matches earlyoom's --prefer."""
    assert host.check_output("systemctl show --property=OOMScoreAdjust --value vllm") == "500"
    main = int(host.check_output("systemctl show --property=MainPID --value vllm"))
    pids = [main] + [int(p) for p in host.check_output("ps -o pid= --ppid %s", str(main)).split()]
    names = {}
    for pid in pids:
        names[pid] = host.file("/proc/%d/comm" % pid).content_string.strip()
        assert host.file("/proc/%d/oom_score_adj" % pid).content_string.strip() == "500", (pid, names[pid])
    assert all(re.match(PREFER, name) for name in names.values()), names
    assert len(pids) >= 2, names  # the API server and vLLM's engine process


@pytest.fixture(scope="module")
def kill_test(host):
    pid = host.check_output("systemctl show --property=MainPID --value earlyoom")
    guard = " ".join(shlex.quote(word) for word in host.check_output("tr '\\0' '\\n' < /proc/%s/cmdline", pid).split("\n"))
    run = host.run("GUARD=%s unshare --pid --fork --mount-proc sh -c %s", guard, KILL_TEST)
    assert run.rc == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    result = json.loads(lines[0])
    result["log"] = [line[5:] for line in lines[1:] if line.startswith("LOG: ")]
    return result


def test_a_memory_hog_is_killed_by_earlyoom_and_not_its_neighbours(kill_test):
    """With the service's own command line, earlyoom stops the hog (200 MiB, named python3, oom_score_adj 500 like the
    vLLM unit's processes) once memory is low, although the neighbour is twice its size; nothing else is signalled."""
    log = "\n".join(kill_test["log"])
    assert "Preferring to kill process names that match regex '%s'" % PREFER in log
    victims = re.findall(r'^sending (SIG\w+) to process (\d+) uid \d+ "([^"]+)": badness (-?\d+), VmRSS (\d+) MiB', log, re.M)
    assert [victim[:3] for victim in victims] == [("SIGTERM", str(kill_test["hog"]), "python3")], log
    assert not kill_test["hog_alive"], log
    assert kill_test["neighbour_alive"] and kill_test["sshd_alive"], log
