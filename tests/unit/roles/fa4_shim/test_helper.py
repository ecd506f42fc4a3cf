"""Unit tests of the role's helper script (files/dgxspark_fa4_shim_helper.py), run as the role runs it.

Distributions are stand-ins: *.dist-info directories with a METADATA file, on a temporary
sys.path entry, which importlib.metadata reads like installed packages. The kernel download
(kernel-fetch) is tested with the real huggingface_hub client against the Hub stand-in in
tests/integration/fa4_shim/test_kernel_download.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

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


def test_helper_errors_are_json(tmp_path):
    result = helper("packages", "--want", "not json", expect_rc=1)
    assert result["failed"] is True and "JSONDecodeError" in result["msg"]
