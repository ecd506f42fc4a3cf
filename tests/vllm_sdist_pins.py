"""The flash-attention commit each vLLM release pins, read from the release's own sdist on PyPI.

vLLM's cmake/external_projects/vllm_flash_attn.cmake (GIT_TAG) names the flash-attention commit a release
builds; the wheels do not contain that file, the sdists do. The fa2_native role keeps a table of these pins
(plugins/module_utils/fa2_source.py, FA_COMMITS); tests/unit/plugins/module_utils/test_fa2_pins_from_sdists.py
checks the whole table against the sdists kept in a local cache.

    python3 tests/vllm_sdist_pins.py fill .cache/vllm-sdists     # from PyPI: every sdist from 0.24.0 on
    python3 tests/vllm_sdist_pins.py show .cache/vllm-sdists     # the pins the cache holds

fill lists vLLM's files on PyPI's simple index (JSON form, PEP 691) and streams each sdist only as far as
the cmake file: the file is about 0.8 MB into a 37-47 MB .tar.gz, so twelve releases cost about 10 MB and a
few seconds rather than 490 MB. What it keeps of each sdist is that prefix, byte for byte as PyPI serves it
(vllm-X.tar.gz.head: a gzip stream that tarfile reads up to and including the cmake file), and index.json
records for each release the file name, URL, size and the sha256 PyPI publishes for the whole file. A whole
vllm-X.tar.gz in the cache (a wheelhouse) is read as well. Files already in the cache are not fetched again.
Exit code 0 when every release was read; 1 otherwise.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import ssl
import sys
import tarfile
import urllib.request
from pathlib import Path

INDEX_URL = "https://pypi.org/simple/vllm/"
MEMBER = "cmake/external_projects/vllm_flash_attn.cmake"
FIRST = (0, 24, 0)
_SDIST_RE = re.compile(r"^vllm-(?P<version>\d+\.\d+\.\d+)\.tar\.gz$")
_GIT_TAG_RE = re.compile(r"^\s*GIT_TAG\s+(?P<tag>[^\s)]+)", re.M)


def version_tuple(version):
    return tuple(int(part) for part in version.split("."))


def _context():
    cafile = os.environ.get("SSL_CERT_FILE") or next(
        (path for path in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt") if os.path.isfile(path)),
        None)
    return ssl.create_default_context(cafile=cafile)


def list_sdists(timeout=60):
    """[{version, filename, url, size, sha256}] of vLLM's final-release sdists from FIRST on, oldest first."""
    request = urllib.request.Request(INDEX_URL, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=timeout, context=_context()) as response:
        data = json.load(response)
    rows = []
    for entry in data["files"]:
        match = _SDIST_RE.match(entry["filename"])
        if not match or entry.get("yanked") or version_tuple(match.group("version")) < FIRST:
            continue
        rows.append({"version": match.group("version"), "filename": entry["filename"], "url": entry["url"],
                     "size": entry.get("size"), "sha256": entry["hashes"]["sha256"]})
    return sorted(rows, key=lambda row: version_tuple(row["version"]))


class _Recorder(io.RawIOBase):
    """Reads from a response and keeps every byte read, so that the prefix can be stored."""

    def __init__(self, response):
        super().__init__()
        self.response, self.kept = response, bytearray()

    def readable(self):
        return True

    def readinto(self, buffer):
        chunk = self.response.read(len(buffer))
        buffer[:len(chunk)] = chunk
        self.kept += chunk
        return len(chunk)


def fetch_head(url, timeout=120):
    """The bytes of the sdist at url up to the end of its cmake file (streamed; the rest is not downloaded)."""
    with urllib.request.urlopen(url, timeout=timeout, context=_context()) as response:
        recorder = _Recorder(response)
        with tarfile.open(fileobj=io.BufferedReader(recorder, buffer_size=64 * 1024), mode="r|gz") as archive:
            for member in archive:
                if member.name.endswith("/" + MEMBER):
                    archive.extractfile(member).read()
                    return bytes(recorder.kept)
    raise ValueError("%s has no %s" % (url, MEMBER))


def read_member(path):
    """The text of the cmake file in an sdist (full .tar.gz or the .tar.gz.head prefix that fill keeps)."""
    with open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r|gz") as archive:
        for member in archive:
            if member.name.endswith("/" + MEMBER):
                return archive.extractfile(member).read().decode("utf-8")
    raise ValueError("%s has no %s" % (path, MEMBER))


def pin_of(text):
    match = _GIT_TAG_RE.search(text)
    if not match:
        raise ValueError("no GIT_TAG in %s" % MEMBER)
    return match.group("tag")


def cached(directory):
    """{version: {"path", "full", "index"}} of the sdists found in directory, with index.json's rows."""
    directory = Path(directory)
    index = {}
    if (directory / "index.json").is_file():
        index = {row["version"]: row for row in json.loads((directory / "index.json").read_text())["sdists"]}
    found = {}
    for version in sorted(set(index) | {m.group("version") for m in (
            _SDIST_RE.match(p.name) for p in directory.glob("vllm-*.tar.gz")) if m}, key=version_tuple):
        full, head = directory / ("vllm-%s.tar.gz" % version), directory / ("vllm-%s.tar.gz.head" % version)
        path = full if full.is_file() else (head if head.is_file() else None)
        found[version] = {"path": path, "full": path == full, "index": index.get(version)}
    return found


def fill(directory):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rows = list_sdists()
    problems = 0
    for row in rows:
        full, head = directory / row["filename"], directory / (row["filename"] + ".head")
        if full.is_file() or head.is_file():
            continue
        try:
            data = fetch_head(row["url"])
        except Exception as exc:  # network errors of several kinds; reported per release
            print("vLLM %s: not read (%s: %s)" % (row["version"], type(exc).__name__, exc), file=sys.stderr)
            problems += 1
            continue
        tmp = head.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.rename(head)
        row["head_bytes"] = len(data)
        print("vLLM %s: %d of %s bytes read" % (row["version"], len(data), row["size"]))
    (directory / "index.json").write_text(json.dumps({"source": INDEX_URL, "sdists": rows}, indent=1) + "\n")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["fill", "show"])
    parser.add_argument("directory")
    args = parser.parse_args(argv)
    if args.action == "fill":
        return 1 if fill(args.directory) else 0
    for version, entry in cached(args.directory).items():
        pin = pin_of(read_member(entry["path"])) if entry["path"] else "(not in the cache)"
        print("%-8s %s" % (version, pin))
    return 0


if __name__ == "__main__":
    sys.exit(main())
