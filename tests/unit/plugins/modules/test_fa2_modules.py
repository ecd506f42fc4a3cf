"""Unit tests of the modules fa2_patch, fa2_source and fa2_library, run as Ansible runs them
(a subprocess of the module file with JSON arguments).

fa2_patch works on a copy of the test project (tests/fixtures/fa2_test_project). fa2_source reads
nightly pins over real HTTP from a local server thread that serves a vLLM-style cmake file.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ansible_collections.dgxspark.vllm.tests.unit.module_env import ansible_doc, module_pythonpath

ROOT = Path(__file__).resolve().parents[4]
COLLECTIONS = ROOT / ".cache" / "collections"
FIXTURE = ROOT / "tests" / "fixtures" / "fa2_test_project"
MODULES = ROOT / "plugins" / "modules"


def run(module, tmp_path, args):
    argsfile = tmp_path / ("args-%s.json" % module)
    argsfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": module_pythonpath()}
    proc = subprocess.run([sys.executable, str(MODULES / (module + ".py")), str(argsfile)],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def tree(tmp_path):
    dest = tmp_path / "flash-attention"
    shutil.copytree(FIXTURE, dest)
    return dest


# ---------------------------------------------------------------------------------------- fa2_patch


def test_patch_check_mode_diff_then_real_then_idempotent(tree, tmp_path):
    cmakelists = tree / "CMakeLists.txt"
    original = cmakelists.read_text()
    args = {"path": str(tree), "target_archs": ["12.1"], "cuda_version": "13.0"}

    check = run("fa2_patch", tmp_path, dict(args, _ansible_check_mode=True, _ansible_diff=True))
    assert check["changed"] is True and check["status"] == "patched"
    assert check["fa2_archs_before"] == "8.0+PTX" and check["fa2_archs"] == "12.1"
    assert '"12.1" "${CUDA_ARCHS}")' in check["diff"]["after"]
    assert cmakelists.read_text() == original, "check mode must not write"

    real = run("fa2_patch", tmp_path, args)
    assert real["changed"] is True
    assert 'cuda_archs_loose_intersection(FA2_ARCHS "12.1" "${CUDA_ARCHS}")' in cmakelists.read_text()
    assert [p.name for p in tree.iterdir() if p.name.startswith(".CMakeLists")] == []

    again = run("fa2_patch", tmp_path, args)
    assert again["changed"] is False and again["status"] == "unchanged" and again["fa2_archs"] == "12.1"
    assert again["git_head"] is None


def test_patch_fails_clearly_when_lines_are_missing(tree, tmp_path):
    cmakelists = tree / "CMakeLists.txt"
    cmakelists.write_text(cmakelists.read_text().replace("cuda_archs_loose_intersection(FA2_ARCHS", "message(FA2_ARCHS"))
    result = run("fa2_patch", tmp_path, {"path": str(tree), "target_archs": ["12.1"], "cuda_version": "13.0"})
    assert result["failed"] is True
    assert str(cmakelists) in result["msg"]
    assert 'cuda_archs_loose_intersection(FA2_ARCHS "..." "${CUDA_ARCHS}")' in result["msg"]


def test_patch_fails_on_a_directory_without_cmakelists(tmp_path):
    result = run("fa2_patch", tmp_path, {"path": str(tmp_path), "target_archs": ["12.1"], "cuda_version": "13.0"})
    assert result["failed"] is True and "no CMakeLists.txt" in result["msg"]


def test_patch_rejects_bad_arch(tree, tmp_path):
    result = run("fa2_patch", tmp_path, {"path": str(tree), "target_archs": ["sm_121"], "cuda_version": "13.0"})
    assert result["failed"] is True and "'sm_121'" in result["msg"]


# ---------------------------------------------------------------------------------------- fa2_source


class _CMakeServer(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):  # noqa: N802 - http.server's API
        if "/good/" in self.path:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(self.body)
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *_args):
        return


@pytest.fixture
def server():
    _CMakeServer.body = (
        b"FetchContent_Declare(\n  vllm-flash-attn\n  GIT_REPOSITORY https://mirror.example/flash-attention.git\n"
        b"  GIT_TAG 0123456789abcdef0123456789abcdef01234567\n  GIT_PROGRESS TRUE\n)\n")
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _CMakeServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d" % httpd.server_address[1]
    httpd.shutdown()


def test_source_release_from_table(tmp_path):
    result = run("fa2_source", tmp_path, {"target_archs": ["12.1"], "vllm_version": "0.33.0"})
    assert result["changed"] is False
    assert result["kind"] == "table" and result["commit"] == "b273a02621d3c94bc747df67204f591b67f38fae"
    assert result["target_archs"] == ["12.1"] and result["fa2_archs"] == "12.1"


def test_source_normalises_and_checks_target_archs(tmp_path):
    ok = run("fa2_source", tmp_path, {"vllm_version": "0.33.0", "target_archs": ["12.1a", "8.0", "12.1"], "ptx": True})
    assert ok["target_archs"] == ["8.0", "12.1"] and ok["fa2_archs"] == "8.0;12.1+PTX"
    old = run("fa2_source", tmp_path, {"vllm_version": "0.33.0", "target_archs": ["7.5", "12.1"]})
    assert old["failed"] is True and "8.0 or newer, got 7.5" in old["msg"]
    bad = run("fa2_source", tmp_path, {"vllm_version": "0.33.0", "target_archs": ["sm_121"]})
    assert bad["failed"] is True and "'sm_121'" in bad["msg"]


def test_source_user_commit_wins(tmp_path):
    result = run("fa2_source", tmp_path, {"target_archs": ["12.1"], "vllm_version": "0.33.0", "commit": "abc1234"})
    assert result["kind"] == "user" and result["commit"] == "abc1234"


def test_source_unknown_release_asks_for_a_commit(tmp_path):
    result = run("fa2_source", tmp_path, {"target_archs": ["12.1"], "vllm_version": "0.99.0"})
    assert result["failed"] is True
    assert "vLLM 0.99.0 is not in the flash-attention pin table" in result["msg"]
    assert "fa2_native_commit" in result["msg"]


def test_source_nightly_reads_the_pin_over_http(tmp_path, server):
    result = run("fa2_source", tmp_path, {"target_archs": ["12.1"], "vllm_version": "0.33.1.dev5+g1a2b3c4d.cu130",
                                          "cmake_url": server + "/good/{commit}/vllm_flash_attn.cmake"})
    assert result["kind"] == "nightly"
    assert result["commit"] == "0123456789abcdef0123456789abcdef01234567"
    assert result["repository"] == "https://mirror.example/flash-attention.git"
    assert "1a2b3c4d" in result["detail"]


def test_source_nightly_unreachable_fails_naming_url_and_setting(tmp_path, server):
    url = server + "/missing/{commit}.cmake"
    result = run("fa2_source", tmp_path, {"target_archs": ["12.1"], "vllm_version": "0.33.1.dev5+g1a2b3c4d", "cmake_url": url})
    assert result["failed"] is True
    assert url.replace("{commit}", "1a2b3c4d") in result["msg"]
    assert "fa2_native_commit" in result["msg"] and "fa2_native_vllm_cmake_url" in result["msg"]


def test_source_nightly_reuses_the_recorded_pin_without_network(tmp_path):
    manifest = tmp_path / "lib.dgxspark.json"
    manifest.write_text(json.dumps({"key": {"vllm": "0.33.1.dev5+g1a2b3c4d", "fa_commit": "feedbeef"},
                                    "source": {"kind": "nightly"}}))
    result = run("fa2_source", tmp_path, {"target_archs": ["12.1"], "vllm_version": "0.33.1.dev5+g1a2b3c4d", "manifest_path": str(manifest),
                                          "cmake_url": "http://127.0.0.1:9/{commit}"})
    assert result["kind"] == "manifest" and result["commit"] == "feedbeef"


def test_source_local_tree_identity_survives_the_patch(tree, tmp_path):
    args = {"vllm_version": "0.33.0", "source_dir": str(tree), "target_archs": ["12.1"], "cuda_version": "13.0"}
    before = run("fa2_source", tmp_path, args)
    assert before["kind"] == "local" and before["commit"].startswith("tree-")
    run("fa2_patch", tmp_path, {"path": str(tree), "target_archs": ["12.1"], "cuda_version": "13.0"})
    after = run("fa2_source", tmp_path, args)
    assert after["commit"] == before["commit"]
    other = run("fa2_source", tmp_path, dict(args, target_archs=["8.0", "12.1"]))
    assert other["commit"] != before["commit"]


def test_source_local_tree_missing(tmp_path):
    result = run("fa2_source", tmp_path, {"target_archs": ["12.1"], "vllm_version": "0.33.0", "source_dir": str(tmp_path / "nope")})
    assert result["failed"] is True and "does not exist on this host" in result["msg"]
    named = run("fa2_source", tmp_path, {"target_archs": ["12.1"], "vllm_version": "0.33.0", "source_dir": str(tmp_path / "nope"), "commit": "abc"})
    assert named["commit"] == "abc"


# ---------------------------------------------------------------------------------------- fa2_library


def test_library_module_check_mode_then_install_then_noop(tmp_path):
    directory = tmp_path / "vllm_flash_attn"
    directory.mkdir()
    lib = directory / "_vllm_fa2_C.abi3.so"
    lib.write_bytes(b"stock")
    build = tmp_path / "new.so"
    build.write_bytes(b"native")
    digest = hashlib.sha256(b"native").hexdigest()
    args = {"path": str(lib), "state": "installed", "src": str(build), "sha256": digest, "manifest": {"build_key": "k"}}

    check = run("fa2_library", tmp_path, dict(args, _ansible_check_mode=True, _ansible_diff=True))
    assert check["changed"] is True and lib.read_bytes() == b"stock"
    assert "diff" in check
    done = run("fa2_library", tmp_path, args)
    assert done["changed"] is True and done["sha256"] == digest and done["manifest"]["build_key"] == "k"
    assert done["stock_sha256"] == hashlib.sha256(b"stock").hexdigest()
    again = run("fa2_library", tmp_path, args)
    assert again["changed"] is False and again["actions"] == []
    back = run("fa2_library", tmp_path, {"path": str(lib), "state": "stock"})
    assert back["changed"] is True and lib.read_bytes() == b"stock" and back["manifest"] is None


def test_library_module_errors_name_the_path(tmp_path):
    lib = tmp_path / "_vllm_fa2_C.abi3.so"
    result = run("fa2_library", tmp_path, {"path": str(lib), "state": "restored"})
    assert result["failed"] is True and str(lib) in result["msg"] and "no saved library" in result["msg"]
    bad = run("fa2_library", tmp_path, {"path": str(lib), "state": "snapshot", "slot": "../x"})
    assert bad["failed"] is True and "slot='../x'" in bad["msg"]


@pytest.mark.parametrize("module", ["fa2_patch", "fa2_source", "fa2_library"])
def test_ansible_doc_renders(module):
    proc = subprocess.run([ansible_doc(), "-t", "module", "dgxspark.vllm." + module],
                          capture_output=True, text=True, check=False,
                          env={"ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    assert proc.returncode == 0, proc.stderr
    assert "dgxspark.vllm." + module in proc.stdout and "RETURN VALUES" in proc.stdout
