"""Verify the fa4_shim scenario: the shim in the venv's real site-packages, the seed's files gone, the packages
in place without moving vLLM's, everything the role installed owned by the venv's owner.

The venv holds the real vLLM 0.33.0 wheel (--no-deps) and CPU torch; the kernel directory is the stand-in of
tests/integration/fa4_shim/standin_kernel mounted at /srv/fa4-standin-kernel. These tests run over docker exec;
the module checks (vllm_verify without a GPU and with an assumed 12.1, model_head_dim) are in side_effect.yml,
next to the absent / snapshot / restore checks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

VENV = "/opt/vllm/venv"
PYTHON = "PYTHONDONTWRITEBYTECODE=1 " + VENV + "/bin/python"
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def site(host):
    return host.check_output(PYTHON + " -c \"import sysconfig; print(sysconfig.get_paths()['purelib'])\"")


def test_site_packages_is_the_venvs(site):
    assert site == VENV + "/lib/python3.11/site-packages"


def test_shim_and_pth_are_in_site_packages(host, site):
    module = host.file(site + "/dgxspark_fa4_sm120_shim.py")
    pth = host.file(site + "/zzz_dgxspark_fa4_sm120.pth")
    assert module.is_file and module.mode == 0o644 and (module.user, module.group) == ("vllm", "vllm")
    assert module.content_string == (ROOT / "roles/fa4_shim/files/dgxspark_fa4_sm120_shim.py").read_text()
    assert pth.is_file and pth.mode == 0o644 and pth.user == "vllm"
    lines = [line for line in pth.content_string.splitlines() if line.startswith("import")]
    assert lines == ['import dgxspark_fa4_sm120_shim; dgxspark_fa4_sm120_shim.install(kernel_dir="/srv/fa4-standin-kernel", '
                     'package_subdir="build/torch-cuda", revision="pre-staged", repo="SecondNatureComputing/flash-attn-4-sm120")']
    assert pth.content_string.startswith("#")
    pyc = host.file(site + "/__pycache__/dgxspark_fa4_sm120_shim.cpython-311.pyc")
    assert pyc.is_file and pyc.user == "vllm", "compiled at install, as the venv's owner"


def test_what_the_role_installs_belongs_to_the_venv_owner(host):
    """The role runs as root; what it installs (packages, shim, .pth, .pyc, backups) must be the venv owner's.

    The only root-owned files allowed are .pyc files that Python itself wrote when something ran the venv's Python
    as root without PYTHONDONTWRITEBYTECODE (venv_facts does, and site.py then compiles what .pth files import,
    such as setuptools' _distutils_hack). None of them may be the shim's.
    """
    root_files = host.check_output("find %s -user root ! -type d" % VENV).splitlines()
    assert all("/__pycache__/" in f and f.endswith(".pyc") for f in root_files), root_files
    assert not any("dgxspark_fa4_sm120_shim" in f for f in root_files), root_files
    for package in ("kernels", "huggingface_hub", "nvidia_cutlass_dsl", "tvm_ffi", "einops"):
        assert host.check_output("find %s/lib/python3.11/site-packages/%s -user root -name '*.py'" % (VENV, package)) == ""


def test_the_venv_python_starts_with_the_shim_installed(host):
    cmd = host.run(PYTHON + " -c \"import json, dgxspark_fa4_sm120_shim as s; print(json.dumps(s.status()))\"")
    assert cmd.rc == 0 and cmd.stderr == ""
    status = json.loads(cmd.stdout)
    assert status["installed"] and status["enabled"] and status["finder_installed"]
    assert status["package_dir"] == "/srv/fa4-standin-kernel/build/torch-cuda"


def test_seed_files_are_gone_and_backed_up(host, site):
    for name in ("zzz_fa4_sm120_shim.pth", "fa4_sm120_shim.py", "sitecustomize.py"):
        assert not host.file(site + "/" + name).exists, name
        stem = name.rsplit(".", 1)[0]
        assert host.check_output("find %s/__pycache__ -name '%s.*.pyc'" % (site, stem)) == "", "compiled copy of " + name
        assert host.file(VENV + "/.dgxspark-fa4_shim-seed-backup/" + name).is_file, name


def test_packages_are_installed_without_moving_vllms(host):
    script = ("import json; from importlib import metadata as m; print(json.dumps({n: m.version(n) for n in "
              "['kernels', 'nvidia-cutlass-dsl', 'einops', 'apache-tvm-ffi', 'torch', 'quack-kernels', 'vllm', 'numpy']}))")
    versions = json.loads(host.check_output("%s -c %s" % (PYTHON, json.dumps(script))))
    assert versions == {"kernels": "0.17.2", "nvidia-cutlass-dsl": "4.8.0", "einops": "0.8.2", "apache-tvm-ffi": "0.1.11",
                        "torch": "2.13.0+cpu", "quack-kernels": "0.6.5", "vllm": "0.33.0", "numpy": "2.4.6"}
