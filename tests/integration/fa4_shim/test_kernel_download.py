"""The role's kernel download with the real huggingface_hub client, against a stand-in of the Hub.

The client is huggingface_hub 2.4.0 from PyPI (realvllm.ensure_hub(): the version kernels==0.17.2 installs),
run as the role runs it: the helper's kernel-fetch with that venv's Python, HF_ENDPOINT pointing at
tests/fixtures/hub_stand_in.py on loopback. The Hub itself is a stand-in because huggingface.co cannot be
reached from the test machines; the repos it serves hold the stand-in kernel tree (standin_kernel/).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import realvllm

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
from hub_stand_in import HubStandIn, write_repo  # noqa: E402

HELPER = ROOT / "roles" / "fa4_shim" / "files" / "dgxspark_fa4_shim_helper.py"
STANDIN_KERNEL = Path(__file__).resolve().parent / "standin_kernel"
REPO = "SecondNatureComputing/flash-attn-4-sm120"
REVISION = "60117041e10fcc6f19882afd274318c755a5ef6e"
TOKEN = "hf_standin_secret"


def kernel_files(source=STANDIN_KERNEL):
    return {p.relative_to(source).as_posix(): p.read_bytes() for p in source.rglob("*") if p.is_file()
            and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def client():
    return realvllm.ensure_hub() / "bin" / "python"


@pytest.fixture
def hub(tmp_path):
    with HubStandIn(tmp_path / "hub") as server:
        server.root = tmp_path / "hub"
        yield server


def publish(hub, repo_type, revision=REVISION, files=None):
    write_repo(hub.root, repo_type, REPO, revision, kernel_files() if files is None else files)


def fetch(client, hub, dest, *extra, token=None, expect_rc=0):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HOME": str(Path(dest).parent / "hf-home"), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1"}
    if token:
        env["HF_TOKEN"] = token
    proc = subprocess.run([str(client), str(HELPER), "kernel-fetch", "--repo", REPO, "--revision", REVISION,
                           "--dest", str(dest), "--subdir", "build/torch-cuda", *extra],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == expect_rc, proc.stdout + proc.stderr
    assert token is None or token not in proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def marker(dest):
    return json.loads((Path(dest) / ".dgxspark-kernel.json").read_text())


def test_the_kernel_type_serves_first(tmp_path, client, hub):
    publish(hub, "kernel")
    dest = tmp_path / "kernels" / REVISION
    assert fetch(client, hub, dest, "--check")["changed"] is True and not dest.exists()
    assert hub.requests == [], "check mode asks nothing"
    first = fetch(client, hub, dest)
    assert first["changed"] is True and first["repo_type"] == "kernel"
    assert first["attempts"] == [{"repo_type": "kernel", "error": None}]
    assert "(Hub repo type kernel)" in first["msg"]
    assert marker(dest) == {"repo": REPO, "revision": REVISION, "subdir": "build/torch-cuda", "repo_type": "kernel",
                            "repo_types_tried": ["kernel"]}
    assert (dest / "build/torch-cuda/interface.py").read_bytes() == (STANDIN_KERNEL / "build/torch-cuda/interface.py").read_bytes()
    assert not (dest / ".cache").exists() and not Path(str(dest) + ".partial").exists()
    assert list((dest / "build/torch-cuda/__pycache__").glob("interface.*.pyc")), "compiled at provisioning"
    assert oct((dest / "build/torch-cuda/interface.py").stat().st_mode & 0o777) == "0o644"
    # the real client asked the kernel-type endpoints only: the tree listing, then HEAD and GET per file
    assert hub.asked() == [p for p in hub.asked() if p.startswith(("/api/kernels/", "/kernels/"))]
    assert hub.asked("GET", "/api/kernels/%s/tree/%s" % (REPO, REVISION))
    assert len(hub.asked("HEAD")) == len(kernel_files()) == len(hub.asked("GET", "/kernels/"))
    hub.requests.clear()
    again = fetch(client, hub, dest)
    assert again["changed"] is False and again["repo_type"] == "kernel" and hub.requests == []
    assert fetch(client, hub, dest, "--check")["changed"] is False


@pytest.mark.parametrize("token", [None, TOKEN])
def test_the_model_type_serves_when_the_kernel_type_has_no_such_repo(tmp_path, client, hub, token):
    """Not moved to the kernel type yet: the Hub answers 401 without a token, 404 with one (RepoNotFound)."""
    publish(hub, "model")
    dest = tmp_path / "k"
    result = fetch(client, hub, dest, token=token)
    assert result["changed"] is True and result["repo_type"] == "model"
    assert [a["repo_type"] for a in result["attempts"]] == ["kernel", "model"]
    assert result["attempts"][0]["error"].startswith("RepositoryNotFoundError: ")
    assert marker(dest)["repo_type"] == "model" and marker(dest)["repo_types_tried"] == ["kernel", "model"]
    first = hub.requests[0]
    assert first["path"] == "/api/kernels/%s/tree/%s" % (REPO, REVISION) and first["status"] == (404 if token else 401)
    assert all(r["token"] is bool(token) for r in hub.requests), "the token from HF_TOKEN goes with every request"
    assert hub.asked("GET", "/%s/resolve/" % REPO), "model files have no URL prefix"


def test_a_revision_missing_under_the_kernel_type_is_looked_for_under_the_model_type(tmp_path, client, hub):
    publish(hub, "kernel", revision="1" * 40)
    publish(hub, "model")
    result = fetch(client, hub, tmp_path / "k")
    assert result["repo_type"] == "model"
    assert result["attempts"][0]["error"].startswith("RevisionNotFoundError: ")


def test_an_explicit_type_is_the_only_one_asked(tmp_path, client, hub):
    publish(hub, "kernel")
    publish(hub, "model")
    result = fetch(client, hub, tmp_path / "k", "--repo-type", "model")
    assert result["repo_type"] == "model" and result["attempts"] == [{"repo_type": "model", "error": None}]
    assert not hub.asked(prefix="/api/kernels/") and not hub.asked(prefix="/kernels/")


def test_a_model_marker_from_before_stays_valid(tmp_path, client, hub):
    """Directories downloaded by earlier versions of the role (model type, no list of types tried) are kept under
    auto; asking for the kernel type explicitly downloads again."""
    publish(hub, "kernel")
    dest = tmp_path / "k"
    publish(hub, "model")
    fetch(client, hub, dest, "--repo-type", "model")
    old = {"repo": REPO, "revision": REVISION, "subdir": "build/torch-cuda", "repo_type": "model"}
    (dest / ".dgxspark-kernel.json").write_text(json.dumps(old))
    hub.requests.clear()
    assert fetch(client, hub, dest)["changed"] is False and hub.requests == []
    again = fetch(client, hub, dest, "--repo-type", "kernel")
    assert again["changed"] is True and marker(dest)["repo_type"] == "kernel"


def test_neither_type_fails_names_both_and_leaves_nothing(tmp_path, client, hub):
    dest = tmp_path / "k"
    result = fetch(client, hub, dest, token=TOKEN, expect_rc=1)
    assert result["failed"] is True
    assert [a["repo_type"] for a in result["attempts"]] == ["kernel", "model"]
    assert "as a kernel repo: RepositoryNotFoundError" in result["msg"] and "as a model repo: RepositoryNotFoundError" in result["msg"]
    assert not dest.exists() and not Path(str(dest) + ".partial").exists()


def test_a_wrong_layout_fails_and_leaves_nothing(tmp_path, client, hub):
    publish(hub, "kernel", files={"README.md": "not a kernel\n"})
    dest = tmp_path / "k"
    result = fetch(client, hub, dest, expect_rc=1)
    assert "(Hub repo type kernel) does not have the expected layout" in result["msg"]
    assert not dest.exists() and not Path(str(dest) + ".partial").exists()


def test_an_unmarked_directory_is_replaced(tmp_path, client, hub):
    publish(hub, "kernel")
    dest = tmp_path / "k"
    dest.mkdir()
    (dest / "stray").write_text("x")
    assert fetch(client, hub, dest)["changed"] is True
    assert not (dest / "stray").exists() and marker(dest)["repo_type"] == "kernel"


PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: dgxspark.vllm.fa4_shim
        tasks_from: kernel
"""


def play(tmp_path, extra_vars):
    return realvllm.run_role_play(tmp_path, PLAYBOOK, extra_vars)


def words(text):
    """The output with its line wrapping undone (the yaml callback folds long messages)."""
    return " ".join(text.split())


def test_the_role_reports_the_type_that_served_and_runs_once(tmp_path, client, hub):
    """The role's kernel step (ansible-playbook, tasks_from kernel) with the default fa4_shim_kernel_repo_type."""
    publish(hub, "model")
    venv = client.parent.parent
    args = {"fa4_shim_venv_path": str(venv), "fa4_shim_kernel_root": str(tmp_path / "kernels"),
            "fa4_shim_hf_endpoint": hub.url, "fa4_shim_hf_token": TOKEN}
    proc, recap = play(tmp_path, args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "changed=1" in recap, recap
    assert "(Hub repo type model)" in words(proc.stdout) and TOKEN not in proc.stdout
    assert marker(tmp_path / "kernels" / REVISION)["repo_types_tried"] == ["kernel", "model"]
    proc, recap = play(tmp_path, args)
    assert proc.returncode == 0 and "changed=0" in recap, recap
    assert "already holds %s at %s (Hub repo type model)" % (REPO, REVISION) in words(proc.stdout)
