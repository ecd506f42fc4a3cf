"""Turn the per-host results of playbooks/benchmark.yml into benchmark-report.json, .md and .svg (output tok/s
against concurrency, one line per host), and flag each host whose output tok/s is below slow_fraction x the fleet's
median at the same concurrency. Runs on the controller with the Python that runs Ansible; standard library only.

    python benchmark_report.py INPUT.json OUTPUT_DIR
"""

import html
import json
import statistics
import sys
from pathlib import Path

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
COLUMNS = [("output_throughput", "output tok/s"), ("total_token_throughput", "total tok/s"),
           ("request_throughput", "req/s"), ("median_ttft_ms", "TTFT median ms"), ("p99_ttft_ms", "TTFT p99 ms"),
           ("median_tpot_ms", "TPOT median ms"), ("p99_tpot_ms", "TPOT p99 ms")]
KEYS = [column[0] for column in COLUMNS]
TITLES = [column[1] for column in COLUMNS]


def flag_slow(hosts, fraction):
    """hosts: name -> {"results": [row, ...]}; returns (medians by concurrency, {name: [reason, ...]})."""
    by_concurrency = {}
    for name, data in hosts.items():
        for row in data.get("results", []):
            if row.get("output_throughput") is not None:
                by_concurrency.setdefault(row["concurrency"], {})[name] = row["output_throughput"]
    medians = {c: statistics.median(values.values()) for c, values in by_concurrency.items()}
    slow = {}
    for concurrency, values in sorted(by_concurrency.items()):
        if len(values) < 2:
            continue  # a fleet of one has nothing to compare with
        for name, value in sorted(values.items()):
            if value < fraction * medians[concurrency]:
                slow.setdefault(name, []).append(
                    "concurrency %d: %.1f output tok/s, below %.2f x the fleet median %.1f"
                    % (concurrency, value, fraction, medians[concurrency]))
    return medians, slow


def svg(hosts, concurrencies, width=640, height=360):
    left, right, top, bottom = 60, 150, 20, 40
    peak = max([row["output_throughput"] or 0 for data in hosts.values() for row in data.get("results", [])] + [1e-9])
    xs = {c: left + (i * (width - left - right) / max(len(concurrencies) - 1, 1)) for i, c in enumerate(concurrencies)}

    def y(value):
        return top + (height - top - bottom) * (1 - value / peak)

    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">'
             % (width, height),
             '<rect width="100%" height="100%" fill="white"/>',
             '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (left, height - bottom, width - right, height - bottom),
             '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (left, top, left, height - bottom),
             '<text x="%d" y="%d" text-anchor="middle">concurrency</text>' % ((left + width - right) / 2, height - 5),
             '<text x="15" y="%d" transform="rotate(-90 15 %d)" text-anchor="middle">output tok/s</text>'
             % ((top + height - bottom) / 2, (top + height - bottom) / 2)]
    for c, x in xs.items():
        parts.append('<text x="%.1f" y="%d" text-anchor="middle">%d</text>' % (x, height - bottom + 15, c))
    for fraction in (0, 0.5, 1):
        parts.append('<text x="%d" y="%.1f" text-anchor="end">%.1f</text>' % (left - 5, y(peak * fraction) + 4, peak * fraction))
    for i, (name, data) in enumerate(sorted(hosts.items())):
        colour = COLOURS[i % len(COLOURS)]
        points = [(xs[row["concurrency"]], y(row["output_throughput"])) for row in sorted(
            data.get("results", []), key=lambda r: r["concurrency"]) if row.get("output_throughput") is not None]
        if points:
            parts.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>'
                         % (colour, " ".join("%.1f,%.1f" % p for p in points)))
            parts.extend('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>' % (px, py, colour) for px, py in points)
        parts.append('<text x="%d" y="%d" fill="%s" data-host="%s">%s</text>'
                     % (width - right + 10, top + 15 * (i + 1), colour, html.escape(name), html.escape(name)))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def markdown(report):
    lines = ["# Fleet benchmark", "",
             "vLLM's serving benchmark (random dataset: %(input_len)d input, %(output_len)d output tokens, "
             "%(num_prompts)d prompts per concurrency), run on each host against its own server." % report["settings"], ""]
    if report["slow_hosts"]:
        lines += ["**Slow: %s** (below %.2f x the fleet median output tok/s at the same concurrency)."
                  % (", ".join(sorted(report["slow_hosts"])), report["settings"]["slow_fraction"]), ""]
        lines += ["- %s: %s" % (name, "; ".join(reasons)) for name, reasons in sorted(report["slow_hosts"].items())]
        lines.append("")
    lines += ["| host | concurrency | " + " | ".join(title for title in TITLES) + " | failed |",
              "|---|---|" + "---|" * len(COLUMNS) + "---|"]
    for name, data in sorted(report["hosts"].items()):
        if data.get("error"):
            lines.append("| %s | - | %s |" % (name, "benchmark failed: " + data["error"].replace("|", "\\|").replace("\n", " ")))
        for row in sorted(data.get("results", []), key=lambda r: r["concurrency"]):
            cells = ["" if row.get(key) is None else "%.2f" % row[key] for key in KEYS]
            lines.append("| %s | %d | %s | %d |" % (name, row["concurrency"], " | ".join(cells), row.get("failed", 0)))
    lines += ["", "Smoke latency (the server role's smoke question, one request):", ""]
    lines += ["- %s: %s" % (name, "%.0f ms" % data["smoke_latency_ms"] if data.get("smoke_latency_ms") is not None
                            else "not measured") for name, data in sorted(report["hosts"].items())]
    lines += ["", "Plot: benchmark-report.svg (output tok/s against concurrency, one line per host).", ""]
    return "\n".join(lines)


def main():
    source, out = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
    settings, hosts = source["settings"], source["hosts"]
    medians, slow = flag_slow(hosts, settings["slow_fraction"])
    report = {"settings": settings, "hosts": hosts, "fleet_median_output_throughput": {str(c): v for c, v in sorted(medians.items())},
              "slow_hosts": slow}
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark-report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    (out / "benchmark-report.md").write_text(markdown(report))
    (out / "benchmark-report.svg").write_text(svg(hosts, sorted(set(settings["concurrencies"]))))
    print(json.dumps({"slow_hosts": sorted(slow)}))


if __name__ == "__main__":
    main()
