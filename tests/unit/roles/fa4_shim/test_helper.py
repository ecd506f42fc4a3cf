"""Unit tests of the role's helper script (files/dgxspark_fa4_shim_helper.py), run as the role runs it.

Distributions are stand-ins: *.dist-info directories with a METADATA file, on a temporary
sys.path entry, which importlib.metadata reads like installed packages. huggingface_hub is a
stand-in module whose snapshot_download copies the stand-in kernel tree (no network here).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from standin_vllm import ROLE, SEED_STYLE, STANDIN_KERNEL  # noqa: E402

HELPER = ROLE / "files" / "dgxspark_fa4_shim_helper.py"


def helper(*args, path=(), env=None, expect_rc=0):
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": os.pathsep.join(str(p) for p in path)}
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, str(HELPER)] + [str(a) for a in args], capture_output=True, text=True,
                          env=full_env, check=False)
    assert proc.returncode == expect_rc, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


# ---- seed files ------------------------------------------------------------------------------

def test_seed_files_are_recognised(tmp_path):
    for name in ("fa4_sm120_shim.py", "zzz_fa4_sm120_shim.pth"):
        shutil.copy(SEED_STYLE / name, tmp_path / name)
    (tmp_path / "sitecustomize.py").write_text('"""seed"""\ntry:\n    import fa4_sm120_shim  # noqa\nexcept ImportError:\n    pass\n')
    (tmp_path / "distutils-precedence.pth").write_text("import os\n")
    result = helper("seed", tmp_path)
    assert sorted(Path(p).name for p in result["remove"]) == ["fa4_sm120_shim.py", "sitecustomize.py", "zzz_fa4_sm120_shim.pth"]
    assert result["keep"] == [] and result["conflicts"] == []


def test_files_with_seed_names_but_other_content_stay(tmp_path):
    (tmp_path / "fa4_sm120_shim.py").write_text("# my own module with the same name\nVALUE = 1\n")
    (tmp_path / "zzz_fa4_sm120_shim.pth").write_text("import fa4_sm120_shim\n/opt/extra/path\n")
    (tmp_path / "sitecustomize.py").write_text("import os\n")  # no mention of the shim: not even reported
    result = helper("seed", tmp_path)
    assert result["remove"] == []
    assert sorted(Path(k["path"]).name for k in result["keep"]) == ["fa4_sm120_shim.py", "zzz_fa4_sm120_shim.pth"]
    assert all(k["reason"] for k in result["keep"])


def test_a_mixed_sitecustomize_is_a_conflict(tmp_path):
    shutil.copy(SEED_STYLE / "fa4_sm120_shim.py", tmp_path / "fa4_sm120_shim.py")
    (tmp_path / "sitecustomize.py").write_text("import os\nimport fa4_sm120_shim\nos.environ.setdefault('X', '1')\n")
    (tmp_path / "other.pth").write_text("import fa4_sm120_shim\n# kept: has a second line\nimport os\n")
    result = helper("seed", tmp_path)
    assert [Path(p).name for p in result["remove"]] == ["fa4_sm120_shim.py"]
    assert sorted(Path(p).name for p in result["conflicts"]) == ["other.pth", "sitecustomize.py"]


def test_no_seed_files(tmp_path):
    assert helper("seed", tmp_path) == {"present": [], "remove": [], "keep": [], "conflicts": []}


# ---- packages --------------------------------------------------------------------------------

def dist(site, name, version, requires=()):
    info = site / ("%s-%s.dist-info" % (name.replace("-", "_"), version))
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", "Name: " + name, "Version: " + version] + ["Requires-Dist: " + r for r in requires]
    (info / "METADATA").write_text("\n".join(lines) + "\n")


def test_packages_unsatisfied_and_constraints(tmp_path):
    site = tmp_path / "site"
    dist(site, "vllm", "0.33.0", ["torch==2.14.0", "einops", "nvidia-cutlass-dsl[cu13]==4.8.0",
                                  "zentorch==2.14.0.1; extra == \"zen\"", "numpy", "huggingface_hub>=1.31.0"])
    dist(site, "torch", "2.13.0+cpu")
    dist(site, "nvidia-cutlass-dsl", "4.8.0")
    dist(site, "einops", "0.8.2")
    dist(site, "kernels", "0.16.0")
    want = ["kernels==0.17.2", "nvidia-cutlass-dsl", "einops", "apache-tvm-ffi"]
    result = helper("packages", "--want", json.dumps(want), path=[site])
    assert result["unsatisfied"] == ["kernels==0.17.2", "apache-tvm-ffi"]
    # installed requirements of vLLM are held where they are; the extra-only one is ignored
    assert result["constraints"] == ["einops==0.8.2", "nvidia-cutlass-dsl==4.8.0", "torch==2.13.0+cpu"]
    assert result["pinned"] == {"einops": "0.8.2", "nvidia-cutlass-dsl": "4.8.0", "torch": "2.13.0+cpu"}
    assert result["requirements_not_installed"] == ["huggingface_hub>=1.31.0", "numpy"]
    assert result["versions"]["kernels"] == "0.16.0" and result["pinned_by_version"] == "0.33.0"


def test_packages_all_satisfied(tmp_path):
    site = tmp_path / "site"
    dist(site, "vllm", "0.28.0", ["einops"])
    dist(site, "einops", "0.8.2")
    result = helper("packages", "--want", json.dumps(["einops>=0.8"]), path=[site])
    assert result["unsatisfied"] == [] and result["constraints"] == ["einops==0.8.2"]


# ---- kernel ----------------------------------------------------------------------------------

def test_kernel_check(tmp_path):
    ok = helper("kernel-check", STANDIN_KERNEL, "build/torch-cuda")
    assert ok["ok"] and ok["problems"] == [] and ok["package_dir"].endswith("standin_kernel/build/torch-cuda")
    bad = helper("kernel-check", tmp_path, "build/torch-cuda")
    assert not bad["ok"] and any("__init__.py is missing" in p for p in bad["problems"])
    assert not helper("kernel-check", tmp_path / "none", "x")["ok"]


HUB_STANDIN = '''
import os, shutil
CALLS_FILE = os.environ["HUB_STANDIN_LOG"]

def snapshot_download(repo_id, revision=None, repo_type=None, local_dir=None, **kwargs):
    with open(CALLS_FILE, "a") as log:
        log.write("%s %s %s %s\\n" % (repo_id, revision, repo_type, "token" if os.environ.get("HF_TOKEN") else "-"))
    if os.environ.get("HUB_STANDIN_FAIL"):
        os.makedirs(local_dir, exist_ok=True)
        raise OSError("401 Client Error: repository type 'model' refused")
    shutil.copytree(os.environ["HUB_STANDIN_SOURCE"], local_dir)
    os.makedirs(os.path.join(local_dir, ".cache", "huggingface"), exist_ok=True)
    return local_dir
'''


@pytest.fixture
def hub(tmp_path):
    (tmp_path / "hub" / "huggingface_hub").mkdir(parents=True)
    (tmp_path / "hub" / "huggingface_hub" / "__init__.py").write_text(HUB_STANDIN)
    log = tmp_path / "calls.log"
    env = {"HUB_STANDIN_LOG": str(log), "HUB_STANDIN_SOURCE": str(STANDIN_KERNEL), "HF_TOKEN": "hf_secret"}
    return tmp_path / "hub", env, log


def fetch(dest, hub, extra=(), env=None, expect_rc=0):
    path, base_env, _log = hub
    full = dict(base_env)
    full.update(env or {})
    return helper("kernel-fetch", "--repo", "SecondNatureComputing/flash-attn-4-sm120", "--revision", "a" * 40,
                  "--dest", dest, "--subdir", "build/torch-cuda", *extra, path=[path], env=full, expect_rc=expect_rc)


def test_kernel_fetch_downloads_once(tmp_path, hub):
    dest = tmp_path / "kernels" / ("a" * 40)
    assert fetch(dest, hub, ["--check"])["changed"] is True and not dest.exists()
    first = fetch(dest, hub)
    assert first["changed"] is True and (dest / "build" / "torch-cuda" / "interface.py").is_file()
    assert not (dest / ".cache").exists() and not Path(str(dest) + ".partial").exists()
    marker = json.loads((dest / ".dgxspark-kernel.json").read_text())
    assert marker == {"repo": "SecondNatureComputing/flash-attn-4-sm120", "revision": "a" * 40,
                      "subdir": "build/torch-cuda", "repo_type": "model"}
    assert list((dest / "build" / "torch-cuda" / "__pycache__").glob("interface.*.pyc")), "compiled at provisioning"
    assert oct((dest / "build" / "torch-cuda" / "interface.py").stat().st_mode & 0o777) == "0o644"
    second = fetch(dest, hub)
    assert second["changed"] is False
    assert fetch(dest, hub, ["--check"])["changed"] is False
    calls = hub[2].read_text().splitlines()
    assert calls == ["SecondNatureComputing/flash-attn-4-sm120 %s model token" % ("a" * 40)], "one download, token from the environment"


def test_kernel_fetch_failure_leaves_nothing_and_keeps_the_token_out(tmp_path, hub):
    dest = tmp_path / "k"
    result = fetch(dest, hub, env={"HUB_STANDIN_FAIL": "1"}, expect_rc=1)
    assert result["failed"] is True and "401 Client Error" in result["msg"] and "hf_secret" not in json.dumps(result)
    assert not dest.exists() and not Path(str(dest) + ".partial").exists()


def test_kernel_fetch_rejects_a_wrong_layout(tmp_path, hub):
    empty = tmp_path / "empty-repo"
    empty.mkdir()
    result = fetch(tmp_path / "k", hub, env={"HUB_STANDIN_SOURCE": str(empty)}, expect_rc=1)
    assert "does not have the expected layout" in result["msg"] and not (tmp_path / "k").exists()


def test_kernel_fetch_replaces_an_unmarked_directory(tmp_path, hub):
    dest = tmp_path / "k"
    dest.mkdir()
    (dest / "stray").write_text("x")
    assert fetch(dest, hub)["changed"] is True
    assert not (dest / "stray").exists() and (dest / ".dgxspark-kernel.json").is_file()


def test_helper_errors_are_json(tmp_path):
    result = helper("packages", "--want", "not json", expect_rc=1)
    assert result["failed"] is True and "JSONDecodeError" in result["msg"]
