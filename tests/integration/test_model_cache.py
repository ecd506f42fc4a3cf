"""dgxspark.vllm.model_cache (and its module model_stage) with the real huggingface_hub client, against a Hub stand-in.

The client is huggingface_hub 2.4.0 from PyPI (the version in the vLLM CPU wheelhouse), in the venv that
realvllm.ensure_hub() builds; the role runs its module with that Python, as it runs it with the vLLM venv's
Python on a host. The Hub is a stand-in (tests/fixtures/hub_stand_in.py on loopback) because huggingface.co
cannot be reached from the test machines; it serves the tiny test model of tests/fixtures/tiny_model.py.
Every case runs the role through ansible-playbook against localhost.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
sys.path.insert(0, str(ROOT / "tests" / "integration" / "fa4_shim"))
import realvllm  # noqa: E402
import tiny_model  # noqa: E402
from hub_stand_in import HubStandIn, write_repo  # noqa: E402

REPO = tiny_model.REPO_ID
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_standin_token_never_logged"
WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def client():
    return realvllm.ensure_hub() / "bin" / "python"


@pytest.fixture(scope="module")
def model():
    made = Path(tiny_model.ensure()["model_dir"])
    files = {p.name: p.read_bytes() for p in sorted(made.iterdir()) if p.is_file()}
    assert WEIGHTS in files and "config.json" in files
    return files


@pytest.fixture
def hub(tmp_path, model):
    root = tmp_path / "hub"
    write_repo(root, "model", REPO, COMMIT, model, refs={"main": COMMIT, "v1": COMMIT})
    with HubStandIn(root) as server:
        server.root = root
        yield server


def stage(tmp_path, client, hub, *args, models=None, expect_rc=0, on_line=None, **extra):
    """Run the role on localhost; return (stdout, the recap line, model_cache_staged)."""
    book = tmp_path / "play.yml"
    book.write_text("""---
- name: Stage models
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: %s
  roles:
    - role: dgxspark.vllm.model_cache
  tasks:
    - name: Write down what was staged (for the test)
      ansible.builtin.copy:
        content: "{{ model_cache_staged | to_json }}"
        dest: "%s"
        mode: "0600"
      check_mode: false
      changed_when: false
""" % (sys.executable, tmp_path / "staged.json"))
    (tmp_path / "staged.json").unlink(missing_ok=True)
    variables = {"model_cache_models": models if models is not None else [{"repo_id": REPO, "revision": "main"}],
                 "model_cache_hf_home": str(tmp_path / "hf"), "model_cache_hf_endpoint": hub.url,
                 "model_cache_python": str(client), "model_cache_progress_interval": 1, "model_cache_free_margin": 0,
                 "model_cache_owner": ""}
    variables.update(extra)
    bindir = Path(sys.executable).parent
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".cache" / "collections"), PATH=str(bindir) + ":" + os.environ["PATH"])
    proc = subprocess.Popen([str(bindir / "ansible-playbook"), "-i", "localhost,", str(book), "-e", json.dumps(variables), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if on_line:
            on_line(line)
    proc.wait(timeout=600)
    proc.stdout.close()
    proc.stdout = out = "".join(lines)
    assert proc.returncode == expect_rc, out[-6000:]
    recap = [line for line in proc.stdout.splitlines() if line.startswith("localhost") and "changed=" in line]
    staged = tmp_path / "staged.json"
    return out, recap[-1] if recap else "", json.loads(staged.read_text()) if staged.is_file() else None


def snapshot(tmp_path):
    return tmp_path / "hf" / "hub" / ("models--" + REPO.replace("/", "--")) / "snapshots" / COMMIT


def downloads(hub):
    return [r for r in hub.requests if r["method"] == "GET" and "/resolve/" in r["path"]]


def test_first_stage_then_rerun_fetches_nothing(tmp_path, client, hub, model):
    out, recap, unused = stage(tmp_path, client, hub, "--check")
    assert "changed=1" in recap and "would fetch %d files" % len(model) in out
    assert downloads(hub) == [] and not snapshot(tmp_path).exists(), "check mode downloads nothing"

    hub.requests.clear()
    out, recap, staged = stage(tmp_path, client, hub)
    assert staged == [{"repo_id": REPO, "revision": "main", "commit": COMMIT, "path": str(snapshot(tmp_path)), "verified": True,
                       "changed": True, "fetched": sorted(model), "bytes_fetched": sum(map(len, model.values())),
                       "repaired": [], "source": "hub", "copied": False}]
    assert sorted(r["path"].rsplit("/", 1)[1] for r in downloads(hub)) == sorted(model)
    for name, data in model.items():
        assert (snapshot(tmp_path) / name).read_bytes() == data
    repo_dir = tmp_path / "hf" / "hub" / ("models--" + REPO.replace("/", "--"))
    assert (repo_dir / "refs" / "main").read_text() == COMMIT
    manifest = json.loads((repo_dir / "dgxspark-manifests" / (COMMIT + ".json")).read_text())
    assert manifest["resolved_from"] == "main" and manifest["commit"] == COMMIT
    for name, data in model.items():
        assert manifest["files"][name]["size"] == len(data)
        assert manifest["files"][name]["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["files"][WEIGHTS]["sha256_from"] == "hub-lfs", "the weights' sha256 is the Hub's LFS one"
    assert manifest["files"]["config.json"]["sha256_from"] == "computed"
    progress = json.loads((Path("/var/tmp/dgxspark-model-cache") / (REPO.replace("/", "--") + ".progress.json")).read_text())
    assert progress["finished"] and progress["bytes_done"] == progress["bytes_total"] == sum(map(len, model.values()))

    # what `vllm serve <repo id>` does with HF_HUB_OFFLINE=1: the client finds the snapshot from refs/main, offline
    env = {"PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    found = subprocess.run([str(client), "-c", "from huggingface_hub import snapshot_download; print(snapshot_download(%r))" % REPO],
                           capture_output=True, text=True, env=env, check=True).stdout.strip()
    assert found == str(snapshot(tmp_path))

    hub.requests.clear()
    refs_before = [(p.name, p.stat().st_mtime_ns) for p in (repo_dir / "refs", repo_dir / "refs" / "main")]
    out, recap, staged = stage(tmp_path, client, hub)
    assert "changed=0" in recap, recap
    assert hub.requests == [], "a re-run of a resolved branch asks the Hub nothing"
    # refs/ untouched: a peer that rewrote it would make every rsync from it to the others a change
    assert [(p.name, p.stat().st_mtime_ns) for p in (repo_dir / "refs", repo_dir / "refs" / "main")] == refs_before
    assert staged[0]["verified"] and staged[0]["fetched"] == [] and "verified (quick)" in out


def test_corrupted_and_truncated_files_are_named_and_fetched_again(tmp_path, client, hub, model):
    stage(tmp_path, client, hub)
    weights = (snapshot(tmp_path) / WEIGHTS).resolve()
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))  # same size: only a re-hash finds it
    tokenizer = (snapshot(tmp_path) / "tokenizer.json").resolve()
    tokenizer.write_bytes(tokenizer.read_bytes()[:1000])

    hub.requests.clear()
    out, recap, staged = stage(tmp_path, client, hub)
    assert "changed=1" in recap and staged[0]["fetched"] == ["tokenizer.json"], "the quick check finds the truncated file"
    assert staged[0]["repaired"] == ["tokenizer.json: size 1000, expected %d (truncated or replaced)" % len(model["tokenizer.json"])]

    hub.requests.clear()
    out, recap, staged = stage(tmp_path, client, hub, model_cache_verify="full")
    assert staged[0]["fetched"] == [WEIGHTS] and len(staged[0]["repaired"]) == 1
    assert staged[0]["repaired"][0].startswith("model.safetensors: sha256 ") and staged[0]["repaired"][0].endswith("(corrupted)")
    assert [r["path"].rsplit("/", 1)[1] for r in downloads(hub)] == [WEIGHTS]
    for name, content in model.items():
        assert (snapshot(tmp_path) / name).read_bytes() == content

    out, recap, unused = stage(tmp_path, client, hub, model_cache_verify="full")
    assert "changed=0" in recap


def test_dropped_connection_resumes_with_a_range_request(tmp_path, client, hub, model):
    cut = 2500000  # of 3.4 MB; the client keeps what arrived in whole chunks (1 MiB, the module's setting)
    hub.drop_once[WEIGHTS] = cut
    stage(tmp_path, client, hub)
    gets = [r for r in downloads(hub) if r["path"].endswith(WEIGHTS)]
    assert len(gets) == 2 and gets[0]["range"] is None, gets
    resumed_at = int(gets[1]["range"].removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= cut, gets
    assert (snapshot(tmp_path) / WEIGHTS).read_bytes() == model[WEIGHTS]


def test_partial_download_left_behind_is_resumed(tmp_path, client, hub, model):
    sha256 = hashlib.sha256(model[WEIGHTS]).hexdigest()
    blobs = tmp_path / "hf" / "hub" / ("models--" + REPO.replace("/", "--")) / "blobs"
    blobs.mkdir(parents=True)
    (blobs / (sha256 + ".incomplete")).write_bytes(model[WEIGHTS][:2000000])  # an earlier run was killed here
    stage(tmp_path, client, hub)
    gets = [r for r in downloads(hub) if r["path"].endswith(WEIGHTS)]
    assert [r["range"] for r in gets] == ["bytes=2000000-"]
    assert (snapshot(tmp_path) / WEIGHTS).read_bytes() == model[WEIGHTS]


def test_not_enough_disk_is_refused_before_any_download(tmp_path, client, hub, model):
    out, unused, unused2 = stage(tmp_path, client, hub, model_cache_free_margin=2 ** 60, expect_rc=2)
    total = sum(map(len, model.values()))
    assert "localhost: not enough disk for model %s at %s: %d bytes to fetch plus a margin of %d" % (REPO, COMMIT, total, 2 ** 60) in out
    assert "bytes free" in out
    assert downloads(hub) == [] and not snapshot(tmp_path).exists()


@pytest.mark.parametrize("revision, repo, expected", [
    ("v9", REPO, "localhost: revision v9 of model %s does not exist on " % REPO),
    ("main", "dgxspark-test/no-such-model", "localhost: model dgxspark-test/no-such-model does not exist on "),
])
def test_unknown_revision_or_model(tmp_path, client, hub, revision, repo, expected):
    out, unused, unused2 = stage(tmp_path, client, hub, models=[{"repo_id": repo, "revision": revision}], expect_rc=2)
    assert expected in out
    assert downloads(hub) == []


def test_gated_model_needs_a_token_that_is_never_logged(tmp_path, client, hub, model):
    (hub.root / "model" / REPO / "gated").write_text("")
    out, unused, unused2 = stage(tmp_path, client, hub, expect_rc=2)
    assert "localhost: model %s is gated" % REPO in out and "no token was given" in out
    assert [r["status"] for r in hub.requests] == [401]

    hub.requests.clear()
    out, recap, staged = stage(tmp_path, client, hub, "-vvv", model_cache_hf_token=TOKEN)
    assert staged[0]["verified"] and "changed=1" in recap
    assert all(r["token"] for r in hub.requests) and downloads(hub)
    assert TOKEN not in out


@pytest.mark.parametrize("entry, expected", [
    ({"repo_id": "not a repo!"}, "localhost: repo_id 'not a repo!' is not a Hugging Face repo id"),
    ({"repo_id": REPO, "revision": "main..v1"}, "localhost: revision 'main..v1' is neither a commit hash nor a branch or tag name"),
])
def test_bad_input_is_named_with_the_host(tmp_path, client, hub, entry, expected):
    out, unused, unused2 = stage(tmp_path, client, hub, models=[entry], expect_rc=2)
    assert expected in out
    assert hub.requests == []


def test_plain_directory_and_patterns(tmp_path, client, hub, model):
    dest = tmp_path / "models" / "tiny"
    entry = {"repo_id": REPO, "revision": COMMIT, "dest": str(dest), "ignore_patterns": ["*.jinja"]}
    unused, recap, staged = stage(tmp_path, client, hub, models=[entry])
    kept = sorted(name for name in model if not name.endswith(".jinja"))
    assert staged[0]["fetched"] == kept and staged[0]["commit"] == COMMIT
    assert sorted(p.name for p in dest.iterdir() if p.is_file()) == sorted(kept + [".dgxspark-manifest.json"])
    hub.requests.clear()
    unused, recap, unused2 = stage(tmp_path, client, hub, models=[entry])
    assert "changed=0" in recap and hub.requests == [], "a pinned commit that is staged needs no Hub"


def test_controller_source_copies_a_cache_entry_and_checks_it_against_its_blob_names(tmp_path, client, hub, model):
    """source controller: a Hugging Face home on the controller (here tiny_model.py's, whose blobs are named by their
    sha256) is copied with ansible.builtin.copy and every file checked against its blob's name; no Hub is asked."""
    made = tiny_model.ensure()
    home = Path(made["hf_hub"]).parent
    entry = home / "hub" / ("models--" + REPO.replace("/", "--"))
    commit = (entry / "refs" / "main").read_text().strip()
    settings = {"model_cache_source": "controller", "model_cache_controller_dir": str(home)}
    out, recap, staged = stage(tmp_path, client, hub, "--check", **settings)
    assert "would copy it (controller)" in out and not (tmp_path / "hf").exists()
    out, recap, staged = stage(tmp_path, client, hub, **settings)
    assert staged[0]["commit"] == commit and staged[0]["verified"] and staged[0]["copied"] and staged[0]["source"] == "controller"
    snap = tmp_path / "hf" / "hub" / entry.name / "snapshots" / commit
    assert {p.name: p.read_bytes() for p in snap.iterdir()} == model
    manifest = json.loads((snap.parent.parent / "dgxspark-manifests" / (commit + ".json")).read_text())
    assert {name: e["sha256"] for name, e in manifest["files"].items()} == {n: hashlib.sha256(d).hexdigest() for n, d in model.items()}
    assert hub.requests == []
    unused, recap, staged = stage(tmp_path, client, hub, **settings)
    assert "changed=0" in recap and not staged[0]["copied"]

    # a blob corrupted on the host: the copy puts the controller's back, and the re-hash after it finds it right
    blob = (snap / WEIGHTS).resolve()
    blob.write_bytes(b"x" * blob.stat().st_size)
    unused, recap, staged = stage(tmp_path, client, hub, **settings)
    assert staged[0]["copied"] and staged[0]["verified"] and (snap / WEIGHTS).read_bytes() == model[WEIGHTS]


def test_a_copied_entry_that_does_not_match_its_blob_names_is_refused(tmp_path, client, hub, model):
    made = tiny_model.ensure()
    home = tmp_path / "controller"
    subprocess.run(["cp", "-a", str(Path(made["hf_hub"]).parent), str(home)], check=True)
    entry = home / "hub" / ("models--" + REPO.replace("/", "--"))
    blob = (entry / "snapshots" / (entry / "refs" / "main").read_text().strip() / "config.json").resolve()
    blob.write_text("{}")
    out, unused, unused2 = stage(tmp_path, client, hub, model_cache_source="controller", model_cache_controller_dir=str(home), expect_rc=2)
    assert "localhost: model %s at " % REPO in out and "cannot be verified: config.json: content (sha256" in out


def test_a_long_download_shows_its_progress(tmp_path, client, hub, model):
    """The stand-in holds the weights after 2 MiB until the role has printed a progress line for them (the async
    job's progress file, read by poll.yml), then lets the download finish."""
    release = threading.Event()
    hub.hold_once[WEIGHTS] = (2 * 1024 * 1024, release)
    total = sum(map(len, model.values()))
    text, seen = [], []
    pattern = re.compile(r"localhost: %s: (\d+) of %d bytes, [0-9.]+ MiB/s, %s" % (REPO, total, re.escape(WEIGHTS)))

    def watch(line):  # the callback may wrap a long message over lines
        text.append(line)
        found = pattern.search(" ".join("".join(text).split()))
        if found and not seen:
            seen.append(int(found.group(1)))
            release.set()

    out, recap, staged = stage(tmp_path, client, hub, on_line=watch)
    assert seen and staged[0]["verified"] and (snapshot(tmp_path) / WEIGHTS).read_bytes() == model[WEIGHTS]
    assert 0 < seen[0] < total


def report(tmp_path):
    """playbooks/tasks/model-cache-report.yml (verify.yml's list of staged models) on localhost."""
    book = tmp_path / "report.yml"
    book.write_text("""---
- name: List the staged models
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: %s
    vllm_server_hf_home: %s
  tasks:
    - name: Read them
      ansible.builtin.include_tasks: %s
    - name: Write them down (for the test)
      ansible.builtin.copy:
        content: "{{ __verify_models | default([]) | to_json }}"
        dest: "%s"
        mode: "0600"
""" % (sys.executable, tmp_path / "hf", ROOT / "playbooks" / "tasks" / "model-cache-report.yml", tmp_path / "models.json"))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".cache" / "collections"))
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", str(book)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return json.loads((tmp_path / "models.json").read_text())


def test_the_verify_report_lists_the_staged_models(tmp_path, client, hub, model):
    stage(tmp_path, client, hub)
    assert report(tmp_path) == [{"repo_id": REPO, "commit": COMMIT, "revision": "main", "files": len(model), "verified": True,
                                 "problem": ""}]
    weights = (snapshot(tmp_path) / WEIGHTS).resolve()
    weights.write_bytes(weights.read_bytes()[:10])
    [row] = report(tmp_path)
    assert not row["verified"] and "model.safetensors: size 10, expected %d" % len(model[WEIGHTS]) in row["problem"]
    assert (snapshot(tmp_path) / WEIGHTS).stat().st_size == 10, "the report changes nothing"


def test_the_head_dim_check_reads_the_staged_config(tmp_path, client, hub, model):
    """fa4_shim's head-dim warning (its models.yml) looks a repo id up where model_cache staged it: a model with
    head_dim 256 staged into the server's HF home is found and warned about; an empty home finds nothing."""
    wide = "dgxspark-test/wide-heads"
    config = {"architectures": ["Qwen3_5ForConditionalGeneration"],
              "text_config": {"head_dim": 256, "hidden_size": 5120, "num_attention_heads": 24}}
    write_repo(hub.root, "model", wide, COMMIT, {"config.json": json.dumps(config), WEIGHTS: model[WEIGHTS]},
               refs={"main": COMMIT})
    stage(tmp_path, client, hub, models=[{"repo_id": wide}])
    book = tmp_path / "check.yml"
    book.write_text("""---
- name: The FA4 shim's head-dim check alone
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: %s
  tasks:
    - name: Check the served models' head dims
      ansible.builtin.include_role:
        name: dgxspark.vllm.fa4_shim
        tasks_from: models
""" % sys.executable)
    bindir = Path(sys.executable).parent
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".cache" / "collections"), PATH=str(bindir) + ":" + os.environ["PATH"])

    def check(home):
        settings = {"fa4_shim_check_models": [wide], "model_cache_hf_home": str(home)}
        proc = subprocess.run([str(bindir / "ansible-playbook"), "-i", "localhost,", str(book), "-e", json.dumps(settings)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path, check=False)
        assert proc.returncode == 0, proc.stdout[-4000:]
        return " ".join(proc.stdout.split())  # the module's warnings included

    out = check(tmp_path / "hf")
    assert "model %s has head_dim 256 (text_config.head_dim) > 128" % wide in out, out[-3000:]
    out = check(tmp_path / "empty")
    assert "is not in the local Hugging Face cache" in out and "head_dim 256" not in out, out[-3000:]
