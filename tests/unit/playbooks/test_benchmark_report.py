"""playbooks/files/benchmark_report.py: the slow-host rule, the Markdown and the plot, from figures written here.

The figures are made up on purpose (this checks the report's arithmetic and layout, not a speed); the molecule
scenario fleet runs the real benchmark against two real vLLM servers and checks the same report."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "playbooks" / "files" / "benchmark_report.py"
sys.path.insert(0, str(SCRIPT.parent))

import benchmark_report  # noqa: E402


def row(concurrency, tok_s):
    return {"concurrency": concurrency, "output_throughput": tok_s, "total_token_throughput": tok_s * 2,
            "request_throughput": tok_s / 10, "median_ttft_ms": 5.0, "p99_ttft_ms": 9.0, "median_tpot_ms": 1.5,
            "p99_tpot_ms": 2.5, "completed": 4, "failed": 0}


def fleet(**tok_s_by_host):
    return {name: {"results": [row(c, v) for c, v in values.items()], "error": "", "smoke_latency_ms": 120.4}
            for name, values in tok_s_by_host.items()}


def test_a_host_below_the_fraction_of_the_median_is_flagged_at_each_concurrency():
    hosts = fleet(a={1: 100.0, 8: 400.0}, b={1: 96.0, 8: 390.0}, c={1: 40.0, 8: 380.0})
    medians, slow = benchmark_report.flag_slow(hosts, 0.5)
    assert medians == {1: 96.0, 8: 390.0}
    assert slow == {"c": ["concurrency 1: 40.0 output tok/s, below 0.50 x the fleet median 96.0"]}
    assert benchmark_report.flag_slow(hosts, 0.4)[1] == {}  # 40 is not below 0.4 x 96 = 38.4


def test_one_host_alone_is_never_flagged_and_a_failed_host_is_not_compared():
    hosts = fleet(a={1: 1.0})
    hosts["b"] = {"results": [], "error": "server not healthy: connection refused", "smoke_latency_ms": None}
    assert benchmark_report.flag_slow(hosts, 0.9) == ({1: 1.0}, {})


def test_the_script_writes_json_markdown_and_a_plot(tmp_path):
    hosts = fleet(a={1: 100.0, 2: 180.0}, b={1: 20.0, 2: 30.0}, c={1: 110.0, 2: 170.0})
    hosts["d"] = {"results": [], "error": "server not healthy: refused | down", "smoke_latency_ms": None}
    source = tmp_path / "in.json"
    source.write_text(json.dumps({"settings": {"input_len": 16, "output_len": 8, "num_prompts": 4,
                                               "concurrencies": [2, 1], "slow_fraction": 0.5}, "hosts": hosts}))
    run = subprocess.run([sys.executable, str(SCRIPT), str(source), str(tmp_path / "out")], capture_output=True,
                         text=True, check=True)
    assert json.loads(run.stdout) == {"slow_hosts": ["b"]}
    data = json.loads((tmp_path / "out" / "benchmark-report.json").read_text())
    assert data["fleet_median_output_throughput"] == {"1": 100.0, "2": 170.0}
    assert list(data["slow_hosts"]) == ["b"] and len(data["slow_hosts"]["b"]) == 2
    markdown = (tmp_path / "out" / "benchmark-report.md").read_text()
    assert "**Slow: b** (below 0.50 x the fleet median output tok/s at the same concurrency)." in markdown
    assert "| a | 1 | 100.00 | 200.00 | 10.00 | 5.00 | 9.00 | 1.50 | 2.50 | 0 |" in markdown
    assert "| d | - | benchmark failed: server not healthy: refused \\| down |" in markdown
    assert "- a: 120 ms" in markdown and "- d: not measured" in markdown
    plot = ET.fromstring((tmp_path / "out" / "benchmark-report.svg").read_text())
    lines = plot.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 3  # d has no figures
    # One point per concurrency, left to right in rising concurrency; the fastest point is at the top.
    points = [[tuple(map(float, p.split(","))) for p in line.get("points").split()] for line in lines]
    assert all(len(p) == 2 and p[0][0] < p[1][0] for p in points)
    assert min(point[1] for p in points for point in p) == pytest.approx(20.0)  # the top margin: a's 180 tok/s is the peak
