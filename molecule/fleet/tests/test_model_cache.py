"""dgxspark.vllm.model_cache in the fleet's prepare step (molecule/shared/real_vllm.yml): the tiny model's Hugging
Face repo went from the controller to dgxspark-fleet-1 (ansible.builtin.copy), and from there to -2 and -3 with real
rsync between the containers (the peer source: fleet-1's rsync daemon for the length of the copy); every host then
checked it and wrote its manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import testinfra

ROOT = Path(__file__).resolve().parents[3]
NAMES = ["dgxspark-fleet-1", "dgxspark-fleet-2", "dgxspark-fleet-3"]
ENTRY = "/var/lib/vllm/huggingface/hub/models--dgxspark-test--tiny-llama"
MODEL = ROOT / ".cache" / "tiny-model" / "current" / "model"


@pytest.fixture(scope="module")
def hosts():
    return {name: testinfra.get_host("docker://" + name) for name in NAMES}


def test_every_host_holds_the_staged_model_with_its_manifest(hosts):
    expected = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in MODEL.iterdir() if p.is_file()}
    commits = set()
    for name, host in hosts.items():
        commit = host.file(ENTRY + "/refs/main").content_string.strip()
        commits.add(commit)
        manifest = json.loads(host.file("%s/dgxspark-manifests/%s.json" % (ENTRY, commit)).content_string)
        assert {f: e["sha256"] for f, e in manifest["files"].items()} == expected, name
        for file, sha256 in expected.items():
            path = "%s/snapshots/%s/%s" % (ENTRY, commit, file)
            assert host.file(path).is_symlink and host.file(path).sha256sum == sha256, (name, file)
            assert host.file(ENTRY + "/blobs/" + sha256).user == "vllm", (name, file)
    assert len(commits) == 1, "the same revision on every host"


def test_the_others_copied_from_the_first_host_with_rsync(hosts):
    """rsync --archive keeps the first host's modification times, which the controller's copy (ansible.builtin.copy)
    set at copy time; so equal times on -2 and -3 show that they got the files from fleet-1, not from the controller."""
    listing = "find %s/blobs -type f -printf '%%f %%T@\\n' | sort" % ENTRY
    first = hosts[NAMES[0]].check_output(listing)
    blobs = ROOT / ".cache" / "tiny-model" / "current" / "hf" / "hub" / "models--dgxspark-test--tiny-llama" / "blobs"
    controller = {p.name: p.stat().st_mtime for p in blobs.iterdir()}
    assert first and all(abs(float(line.split()[1]) - controller[line.split()[0]]) > 1e-3 for line in first.splitlines())
    for name in NAMES[1:]:
        assert hosts[name].check_output(listing) == first, name
        assert hosts[name].exists("rsync")
    assert not hosts[NAMES[0]].process.filter(comm="rsync"), "the peer's rsync daemon was stopped after the copy"
