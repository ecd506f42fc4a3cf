"""Verify dgxspark.vllm.node_exporter in the host_prep scenario: Debian's prometheus-node-exporter, running, listening
on loopback only (the role's default), and serving the host's metrics."""

from __future__ import annotations


def test_the_node_exporter_is_installed_and_running(host):
    assert host.package("prometheus-node-exporter").is_installed
    service = host.service("prometheus-node-exporter")
    assert service.is_running and service.is_enabled
    settings = host.file("/etc/default/prometheus-node-exporter").content_string
    assert 'ARGS="--web.listen-address=127.0.0.1:9100"' in settings.splitlines()


def test_it_listens_on_loopback_only_and_serves_metrics(host):
    assert host.socket("tcp://127.0.0.1:9100").is_listening
    assert not host.socket("tcp://0.0.0.0:9100").is_listening
    page = host.check_output("python3 -c %s", "import urllib.request; print(urllib.request.urlopen("
                             "'http://127.0.0.1:9100/metrics', timeout=30).read().decode())")
    names = {line.split("{")[0].split(" ")[0] for line in page.splitlines() if line and not line.startswith("#")}
    assert {"node_memory_MemAvailable_bytes", "node_cpu_seconds_total", "node_filesystem_avail_bytes"} <= names
