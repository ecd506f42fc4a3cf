"""Benchmark: wall time and peak memory of building the FA2 target for one arch list against another.

For each arch list (default "12.1" and "8.0;12.1") and each repetition, this copies the source tree,
applies the fa2_native patch for that list (plugins/module_utils/fa2_source.py), configures with
cmake (Ninja, Release) and builds the _vllm_fa2_C target only, while sampling memory from /proc:

  * wall time of the build step (configure timed separately);
  * peak RSS of the whole process tree (sum over cmake, ninja, nvcc, cicc, ptxas, ... at each sample);
  * peak RSS of the largest single process (getrusage of the waited-for children, as /usr/bin/time -v shows).

Default source: the test project (tests/fixtures/fa2_test_project), which needs no torch and has two
tiny kernels, so its absolute times are small. On a Spark, point --source at a real flash-attention
tree (e.g. <vllm>/.deps/vllm-flash-attn-src) and --python at the vLLM venv's python (torch is needed there).

    python3 benchmarks/fa2_build.py                                   # test project, 3 runs each
    python3 benchmarks/fa2_build.py --source ~/fa-src --python /opt/vllm/venv/bin/python --jobs 8 --runs 1

A fixed subset of the real FA2 sources (--subset GLOB, repeatable) keeps only the matching
csrc/flash_attn/src/flash_fwd_*.cu files in each copy, so that FA's file(GLOB) compiles just those, for a
one-arch against two-arch ratio that fits in less time than two full builds:

    python3 benchmarks/fa2_build.py --source ~/fa-src --python /opt/vllm/venv/bin/python --jobs 2 --runs 2 \
        --subset 'flash_fwd_hdim128_*' --cuda-driver-library /usr/local/cuda/lib64/stubs/libcuda.so

--objects-only builds just those .cu objects (no host .cpp files, no link), the part whose cost depends on
the number of archs, and reports the CPU time of the compilers (getrusage), which a busy machine does not
distort as it does wall time.

--watch samples, instead of building, the processes of a build that runs elsewhere (the fa2_native role's,
say) until a file matching --until appears: the peak RSS of the largest compiler process (with its source
file), the peak sum over the compiler processes, and the lowest MemAvailable:

    python3 benchmarks/fa2_build.py --watch --until '/var/lib/dgxspark/fa2_native/logs/build-*.log.rc' --json

(--cgroup ID counts only the processes of one container, on a machine where others compile too.)

Not a test: run by hand; prints a table and, with --json, a JSON line. Needs cmake >= 3.26, ninja, nvcc.
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins" / "module_utils"))
import fa2_source  # noqa: E402  (plain functions, no Ansible needed)

PAGE = os.sysconf("SC_PAGE_SIZE")


def _children_map():
    """{ppid: [pid, ...]} for every process, from /proc/<pid>/stat."""
    tree = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            tree.setdefault(int(fields[1]), []).append(int(entry))
        except (OSError, IndexError):
            continue
    return tree


def _rss(pid):
    try:
        with open("/proc/%d/statm" % pid) as handle:
            return int(handle.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


class TreeSampler(threading.Thread):
    """Samples the summed RSS of a process and all its descendants until stopped."""

    def __init__(self, pid, interval=0.05):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak, self.stop_flag = pid, interval, 0, threading.Event()

    def run(self):
        while not self.stop_flag.is_set():
            tree, todo, total = _children_map(), [self.pid], 0
            while todo:
                pid = todo.pop()
                total += _rss(pid)
                todo.extend(tree.get(pid, []))
            self.peak = max(self.peak, total)
            time.sleep(self.interval)


# Runs the command and prints the largest max RSS (KiB) among its descendants (getrusage of the children).
WRAPPER = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
           "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
           "print('MAXRSS_KB', u.ru_maxrss, file=sys.stderr); "
           "print('CPU_S', u.ru_utime + u.ru_stime, file=sys.stderr); sys.exit(rc)")


def run_measured(argv, env, log, interval=0.05):
    """Run argv; return (seconds, peak tree RSS bytes, largest single descendant's max RSS bytes)."""
    start = time.monotonic()
    with open(log, "ab") as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-c", WRAPPER] + [str(a) for a in argv], stdout=out, stderr=err, env=env)
        sampler = TreeSampler(proc.pid, interval)
        sampler.start()
        rc = proc.wait()
        sampler.stop_flag.set()
        sampler.join()
        err.seek(0)
        lines = err.read().decode(errors="replace").splitlines()
    seconds = time.monotonic() - start
    with open(log, "a") as out:
        out.write("\n".join(line for line in lines if not line.startswith(("MAXRSS_KB", "CPU_S"))) + "\n")
    if rc != 0:
        raise SystemExit("%s failed (rc=%d); see %s" % (" ".join(map(str, argv)), rc, log))
    maxrss = [int(line.split()[1]) for line in lines if line.startswith("MAXRSS_KB")]
    cpu = [float(line.split()[1]) for line in lines if line.startswith("CPU_S")]
    run_measured.cpu_seconds = cpu[-1] if cpu else None
    return seconds, sampler.peak, maxrss[-1] * 1024 if maxrss else None


# Processes that belong to a CUDA build (nvcc runs cicc, ptxas, fatbinary, cudafe++ and the host compiler).
COMPILER_NAMES = ("nvcc", "cicc", "ptxas", "fatbinary", "nvlink", "cudafe++", "cc1plus", "cc1", "gcc", "g++", "c++",
                  "ld", "collect2", "as")


def _proc_name(pid):
    try:
        with open("/proc/%d/comm" % pid) as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _proc_source(pid):
    """The .cu/.cpp file a compiler process works on, from its command line (for the report)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            argv = handle.read().decode(errors="replace").split("\0")
    except OSError:
        return ""
    files = [a for a in argv if a.endswith((".cu", ".cpp", ".cc"))]
    return os.path.basename(files[-1]) if files else ""


def _proc_cgroup(pid):
    try:
        with open("/proc/%d/cgroup" % pid) as handle:
            return handle.read()
    except OSError:
        return ""


def _mem_available():
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid):
    """utime + stime of a process plus cutime + cstime (its children that have ended and been waited for)."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return sum(int(v) for v in fields[11:15]) / TICKS
    except (OSError, IndexError, ValueError):
        return 0.0


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def tree_cpu_seconds(substring):
    """CPU seconds so far of the process trees whose root's command line contains substring: each process's
    own time plus what its ended children used (so every second is counted once)."""
    tree = _children_map()
    roots = [int(e) for e in os.listdir("/proc")
             if e.isdigit() and int(e) != os.getpid() and substring in _cmdline(int(e))]
    seen, total, todo = set(), 0.0, list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _cpu_seconds(pid)
        todo.extend(tree.get(pid, []))
    return total, len(roots)


def watch(args):
    """Sample the compiler processes of the whole machine until a file matching args.until exists."""
    started, samples, cpu, cpu_roots = time.monotonic(), 0, 0.0, 0
    peak_sum, largest, largest_what, low_avail, peak_count = 0, 0, "", _mem_available(), 0
    while time.monotonic() - started < args.timeout:
        if args.until and glob.glob(args.until):
            break
        total, count = 0, 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            name = _proc_name(pid)
            if name not in COMPILER_NAMES or (args.cgroup and args.cgroup not in _proc_cgroup(pid)):
                continue
            rss = _rss(pid)
            total += rss
            count += 1
            if rss > largest:
                largest, largest_what = rss, "%s %s" % (name, _proc_source(pid))
        peak_sum, peak_count = max(peak_sum, total), max(peak_count, count)
        if args.cpu_of:
            seconds, roots = tree_cpu_seconds(args.cpu_of)
            if seconds > cpu:
                cpu, cpu_roots = seconds, max(cpu_roots, roots)
        low_avail = min(low_avail, _mem_available())
        samples += 1
        time.sleep(args.interval)
    result = {"seconds": round(time.monotonic() - started, 1), "samples": samples, "interval_s": args.interval,
              "largest_process_mb": round(largest / 1e6, 1), "largest_process": largest_what.strip(),
              "compilers_peak_sum_mb": round(peak_sum / 1e6, 1), "compilers_peak_count": peak_count,
              "mem_available_low_mb": round(low_avail / 1e6, 1), "until": args.until,
              "until_found": bool(args.until and glob.glob(args.until)),
              "cpu_of": args.cpu_of, "cpu_seconds": round(cpu, 1) if args.cpu_of else None}
    print("watched %.0f s (%d samples): largest compiler process %.1f MB (%s); compilers together at most %.1f MB "
          "(%d processes at most); MemAvailable at least %.1f MB" % (
              result["seconds"], samples, result["largest_process_mb"], result["largest_process"],
              result["compilers_peak_sum_mb"], peak_count, result["mem_available_low_mb"]), flush=True)
    if args.cpu_of:
        print("CPU time of the processes under %r: %.0f s (the last sample before they ended)" % (args.cpu_of, cpu))
    if args.json:
        print(json.dumps(result))


def keep_subset(src, patterns):
    """Delete the FA2 generated sources that match none of the patterns; returns the kept file names."""
    kept = []
    for path in sorted((src / "csrc" / "flash_attn" / "src").glob("flash_fwd_*.cu")):
        if any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns):
            kept.append(path.name)
        else:
            path.unlink()
    if not kept:
        raise SystemExit("--subset %s matches no csrc/flash_attn/src/flash_fwd_*.cu in %s" % (patterns, src))
    return kept


def ninja_steps(build):
    """Seconds of each build step from ninja's log (.ninja_log: start and end in ms), summed by kind:
    cu (the FA2 .cu files, where the arch count matters), cpp (host sources) and link."""
    sums = {"cu": 0.0, "cpp": 0.0, "link": 0.0, "other": 0.0}
    log = build / ".ninja_log"
    if not log.is_file():
        return sums
    latest = {}
    for line in log.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 4 and fields[0].isdigit():
            latest[fields[3]] = (int(fields[1]) - int(fields[0])) / 1000.0     # the last entry of an output wins
    for output, seconds in latest.items():
        kind = ("cu" if output.endswith(".cu.o") else "cpp" if output.endswith((".cpp.o", ".cc.o"))
                else "link" if output.endswith(".so") else "other")
        sums[kind] += seconds
    return {kind: round(value, 1) for kind, value in sums.items()}


def one_build(args, archs, workdir, index):
    src = workdir / ("src-%d" % index)
    build = workdir / ("build-%d" % index)
    shutil.copytree(args.source, src, symlinks=True, ignore=shutil.ignore_patterns(".git", "build"))
    kept = keep_subset(src, args.subset) if args.subset else None
    text = (src / "CMakeLists.txt").read_text()
    patched, info = fa2_source.patch_cmakelists(text, archs, args.cuda_version)
    (src / "CMakeLists.txt").write_text(patched)
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(args.nvcc).parent), str(Path(args.cmake).parent),
                                                 os.environ.get("PATH", "")]),
               TORCH_CUDA_ARCH_LIST=";".join(archs))
    log = workdir / ("build-%d.log" % index)
    configure = [args.cmake, "-S", str(src), "-B", str(build), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                 "-DPython_EXECUTABLE=%s" % args.python, "-DCMAKE_CUDA_COMPILER=%s" % args.nvcc,
                 "-DCUDA_ARCHS=%s" % ";".join(archs)]
    if args.cuda_driver_library:
        configure.append("-DCUDA_cuda_driver_LIBRARY=%s" % args.cuda_driver_library)
    configure_s, _peak, _maxrss = run_measured(configure, env, log, args.sample_interval)
    configured = [line.split("FA2_ARCHS:", 1)[1].strip() for line in log.read_text().splitlines() if "FA2_ARCHS:" in line]
    if not configured or configured[-1] != ";".join(info["desired"]):
        raise SystemExit("configure printed FA2_ARCHS %r, expected %s" % (configured, ";".join(info["desired"])))
    targets = ["_vllm_fa2_C"]
    if args.objects_only:
        listing = subprocess.run([args.ninja, "-C", str(build), "-t", "targets", "all"], capture_output=True, text=True,
                                 check=True).stdout
        targets = sorted({line.split(":", 1)[0] for line in listing.splitlines()
                          if line.split(":", 1)[0].endswith(".cu.o") and "_vllm_fa2_C.dir/" in line.split(":", 1)[0]})
        if not targets:
            raise SystemExit("no FA2 .cu objects among the ninja targets of %s" % build)
    build_s, tree_peak, largest = run_measured([args.cmake, "--build", str(build), "--target"] + targets
                                               + ["-j", str(args.jobs)], env, log, args.sample_interval)
    build_cpu = run_measured.cpu_seconds
    lib = next(build.glob("_vllm_fa2_C*.so"), None)
    size = lib.stat().st_size if lib else None
    steps = ninja_steps(build)
    shutil.rmtree(build)
    shutil.rmtree(src)
    return {"configure_s": round(configure_s, 2), "build_s": round(build_s, 2), "tree_peak_mb": round(tree_peak / 1e6, 1),
            "largest_process_mb": round(largest / 1e6, 1) if largest else None, "library_bytes": size,
            "fa2_sources": kept, "step_seconds": steps, "build_cpu_s": round(build_cpu, 1) if build_cpu else None}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=str(ROOT / "tests" / "fixtures" / "fa2_test_project"))
    parser.add_argument("--python", default=sys.executable, help="Python_EXECUTABLE for cmake (with torch for the real FA)")
    parser.add_argument("--cmake", default=shutil.which("cmake") or "cmake")
    parser.add_argument("--nvcc", default=shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc")
    parser.add_argument("--cuda-version", default="13.0")
    parser.add_argument("--archs", action="append", help="an arch list like 12.1 or 8.0,12.1 (repeatable)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--subset", action="append", help="keep only the FA2 sources flash_fwd_*.cu matching this glob")
    parser.add_argument("--cuda-driver-library", help="libcuda.so for CMake's CUDA::cuda_driver (e.g. the toolkit's stub)")
    parser.add_argument("--objects-only", action="store_true",
                        help="build only the FA2 .cu objects (no host sources, no link): the part that depends on the archs")
    parser.add_argument("--ninja", default=shutil.which("ninja") or "ninja", help="ninja (for --objects-only)")
    parser.add_argument("--sample-interval", type=float, default=0.05,
                        help="seconds between memory samples of a build (each walks /proc; 0.5 for long builds on a busy machine)")
    parser.add_argument("--watch", action="store_true", help="sample a build that runs elsewhere instead of building")
    parser.add_argument("--until", help="with --watch: stop when a file matching this glob exists")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="with --watch: stop after this many seconds")
    parser.add_argument("--interval", type=float, default=1.0, help="with --watch: seconds between samples")
    parser.add_argument("--cpu-of", help="with --watch: also sum the CPU time of the process trees whose command line "
                                         "contains this (e.g. '--target _vllm_fa2_C')")
    parser.add_argument("--cgroup", help="with --watch: only processes whose /proc/PID/cgroup contains this (a container id)")
    args = parser.parse_args()
    if args.watch:
        watch(args)
        return
    lists = [fa2_source.normalize_archs(a) for a in (args.archs or ["12.1", "8.0,12.1"])]

    results = {}
    with tempfile.TemporaryDirectory(prefix="fa2-bench-") as tmp:
        workdir = Path(tmp)
        index = 0
        for run in range(args.runs):
            for archs in lists:            # interleaved, so that drift in machine load hits both alike
                index += 1
                row = one_build(args, archs, workdir, index)
                results.setdefault(";".join(archs), []).append(row)
                print("run %d  %-10s build %6.2f s  configure %5.2f s  tree peak %7.1f MB  largest process %s MB  "
                      "CPU %s s  steps: .cu %.1f s, .cpp %.1f s, link %.1f s"
                      % (run + 1, ";".join(archs), row["build_s"], row["configure_s"], row["tree_peak_mb"],
                         row["largest_process_mb"], row["build_cpu_s"], row["step_seconds"]["cu"],
                         row["step_seconds"]["cpp"], row["step_seconds"]["link"]), flush=True)

    summary = {}
    for key, rows in results.items():
        summary[key] = {"runs": len(rows),
                        "build_s_median": statistics.median(r["build_s"] for r in rows),
                        "build_s_all": [r["build_s"] for r in rows],
                        "tree_peak_mb_max": max(r["tree_peak_mb"] for r in rows),
                        "largest_process_mb_max": max((r["largest_process_mb"] or 0) for r in rows),
                        "library_bytes": rows[-1]["library_bytes"],
                        "cpu_s_median": statistics.median(r["build_cpu_s"] or 0 for r in rows),
                        "cpu_s_all": [r["build_cpu_s"] for r in rows],
                        "cu_s_median": statistics.median(r["step_seconds"]["cu"] for r in rows),
                        "cu_s_all": [r["step_seconds"]["cu"] for r in rows]}
    keys = list(summary)
    print("\nsource %s, %d jobs, %d run(s) each, nvcc %s" % (args.source, args.jobs, args.runs, args.nvcc))
    if args.subset:
        print("FA2 sources kept (--subset %s): %s" % (" ".join(args.subset), " ".join(next(iter(results.values()))[0]["fa2_sources"])))
    print("%-10s %14s %16s %22s %14s" % ("archs", "build median s", "tree peak MB", "largest process MB", "library bytes"))
    for key in keys:
        s = summary[key]
        print("%-10s %14.2f %16.1f %22.1f %14s" % (key, s["build_s_median"], s["tree_peak_mb_max"],
                                                   s["largest_process_mb_max"], s["library_bytes"]))
    if len(keys) == 2:
        ratio = summary[keys[0]]["build_s_median"] / summary[keys[1]]["build_s_median"]
        print("build time %s / %s = %.2f" % (keys[0], keys[1], ratio))
        summary["ratio_build_s"] = round(ratio, 3)
        if summary[keys[1]]["cu_s_median"]:
            cu_ratio = summary[keys[0]]["cu_s_median"] / summary[keys[1]]["cu_s_median"]
            print("FA2 .cu compile time (sum of ninja steps) %s / %s = %.2f" % (keys[0], keys[1], cu_ratio))
            summary["ratio_cu_s"] = round(cu_ratio, 3)
        if summary[keys[1]]["cpu_s_median"]:
            cpu_ratio = summary[keys[0]]["cpu_s_median"] / summary[keys[1]]["cpu_s_median"]
            print("CPU time of the build (all compiler processes) %s / %s = %.2f" % (keys[0], keys[1], cpu_ratio))
            summary["ratio_cpu_s"] = round(cpu_ratio, 3)
        pairs = [a["build_s"] / b["build_s"] for a, b in zip(results[keys[0]], results[keys[1]])]
        print("per interleaved pair: %s" % ", ".join("%.2f" % p for p in pairs))
        summary["ratio_build_s_pairs"] = [round(p, 3) for p in pairs]
    if args.json:
        print(json.dumps({"source": args.source, "jobs": args.jobs, "subset": args.subset, "results": results,
                          "summary": summary}))


if __name__ == "__main__":
    main()
