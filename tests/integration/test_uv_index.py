"""The uv role's index lookup (roles/uv/tasks/source_index.yml) on PEP 691 JSON pages, with ansible-playbook
against localhost; everything it writes goes to a temporary directory.

- a local index on 127.0.0.1 that answers PEP 691 JSON when asked for it (and PEP 503 HTML otherwise), with
  relative URLs that the role resolves against the page, digests as data, and one lying digest;
- the real PyPI (the one index the CI machines can reach) in check mode: the role reads its JSON page and
  finds the pinned wheel with the digest the role knows.
The wheels on the local index are stand-ins (their uv and uvx are scripts printing a version); the HTML path is
tested in test_host_prep_roles.py.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import platform
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ARCH = platform.machine()
TAGS = {"x86_64": "manylinux_2_17_x86_64.manylinux2014_x86_64", "aarch64": "manylinux_2_28_aarch64"}
PEP691 = "application/vnd.pypi.simple.v1+json"


def stand_in_wheel(version):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in ("uv", "uvx"):
            info = zipfile.ZipInfo("uv-%s.data/scripts/%s" % (version, name))
            info.external_attr = 0o755 << 16
            zf.writestr(info, "#!/bin/sh\necho '%s %s (stand-in)'\n" % (name, version))
    return buf.getvalue()


@pytest.fixture()
def json_index():
    """/simple/uv/ answers PEP 691 JSON to a client that accepts it, else HTML; wheels under /files/<digest>/."""
    files, blobs, seen = [], {}, []
    for version in ("9.9.1", "9.9.2"):
        for arch, tag in TAGS.items():
            name = "uv-%s-py3-none-%s.whl" % (version, tag)
            blob = stand_in_wheel(version)
            digest = hashlib.sha256(blob).hexdigest()
            blobs["/files/%s/%s" % (digest[:8], name)] = blob
            # 9.9.2 is published with a digest that is not its own.
            files.append({"filename": name, "url": "../../files/%s/%s" % (digest[:8], name),
                          "hashes": {"sha256": digest if version == "9.9.1" else "0" * 64}})
        files.append({"filename": "uv-%s-py3-none-musllinux_1_1_%s.whl" % (version, ARCH), "url": "/nowhere",
                      "hashes": {"sha256": "1" * 64}})

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the name http.server calls)
            seen.append((self.path, self.headers.get("Accept", "")))
            if self.path == "/simple/uv/":
                if PEP691 in self.headers.get("Accept", ""):
                    body, ctype = json.dumps({"meta": {"api-version": "1.1"}, "name": "uv", "files": files}), PEP691
                else:
                    body, ctype = "<html><body>no links for clients that want HTML</body></html>", "text/html"
                data = body.encode()
            elif self.path in blobs:
                data, ctype = blobs[self.path], "application/octet-stream"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"url": "http://127.0.0.1:%d/simple" % server.server_address[1], "seen": seen,
           "sha": {f["filename"]: hashlib.sha256(blobs[f["url"][5:]]).hexdigest() for f in files
                   if f["url"].startswith("../..")}}
    server.shutdown()


def run_uv(tmp_path, *args, **role_vars):
    role = dict({"role": "dgxspark.vllm.uv", "uv_install_dir": str(tmp_path / "bin"),
                 "uv_cache_dir": str(tmp_path / "cache")}, **role_vars)
    (tmp_path / "play.yml").write_text(json.dumps([{"name": "uv", "hosts": "localhost", "gather_facts": False,
                                                    "roles": [role]}]))
    env = {"PATH": "%s:/usr/bin:/bin:/usr/sbin:/sbin" % BIN, "HOME": str(Path.home()),
           "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1", "no_proxy": "127.0.0.1,localhost",
           "NO_PROXY": "127.0.0.1,localhost", "ANSIBLE_LOCAL_TEMP": str(tmp_path / ".ansible-local")}
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        if name in os.environ:
            env[name] = os.environ[name]
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", "-e",
                           "ansible_python_interpreter=%s" % sys.executable, str(tmp_path / "play.yml"), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def installed_version(tmp_path):
    return subprocess.run([str(tmp_path / "bin" / "uv"), "--version"], capture_output=True, text=True,
                          check=True).stdout.split()[1]


def test_pep691_json_index_with_relative_urls_then_a_lying_digest(tmp_path, json_index):
    rc, out = run_uv(tmp_path, uv_version="9.9.1", uv_index_url=json_index["url"])
    assert rc == 0, out
    assert installed_version(tmp_path) == "9.9.1"
    wheel = "uv-9.9.1-py3-none-%s.whl" % TAGS[ARCH]
    assert hashlib.sha256((tmp_path / "cache" / wheel).read_bytes()).hexdigest() == json_index["sha"][wheel]
    assert any(path == "/simple/uv/" and PEP691 in accept for path, accept in json_index["seen"])
    # the wheel came from the relative URL, resolved against the page: /simple/uv/../../files/<digest>/<name>
    assert any(path.startswith("/files/") and path.endswith(wheel) for path, _accept in json_index["seen"])

    # 9.9.2: no digest of the role's own and none given, so the index's (wrong) digest is the one checked.
    rc, out = run_uv(tmp_path, uv_version="9.9.2", uv_index_url=json_index["url"])
    assert rc == 2, out
    assert "cannot download http://127.0.0.1:" in out and "with sha256 %s" % ("0" * 64) in out, out
    assert installed_version(tmp_path) == "9.9.1"


def test_real_pypi_json_page_lists_the_pinned_wheel_in_check_mode(tmp_path):
    """The role's default uv version on pypi.org: found on the JSON page, with the digest the role pins."""
    defaults = yaml.safe_load((ROOT / "roles" / "uv" / "defaults" / "main.yml").read_text())
    rc, out = run_uv(tmp_path, "--check", "-v", uv_index_url="https://pypi.org/simple")
    assert rc == 0, out
    assert "Assert that the checksum is known and agrees with the index" in out
    assert "uv-%s-py3-none-" % defaults["uv_version"] in out, out
    assert not (tmp_path / "bin" / "uv").exists()
