"""Verify the host_prep scenario: uv, the vLLM venv, the CUDA environment files and the page-cache drop,
read from the converged systemd container (after the side_effect play's bad-input and read-only cases)."""

from __future__ import annotations

import json
import shlex

import pytest

VENV = "/opt/vllm/venv"
PY = VENV + "/bin/python"


def _run_ok(host, command):
    result = host.run(command)
    assert result.rc == 0, "%s: rc=%d\n%s\n%s" % (command, result.rc, result.stdout, result.stderr)
    return result.stdout.strip()


# --- uv -------------------------------------------------------------------------------------------------

def test_uv_is_the_pinned_version_system_wide(host):
    uv = host.file("/usr/local/bin/uv")
    assert uv.is_file and uv.user == "root" and uv.mode == 0o755
    assert _run_ok(host, "/usr/local/bin/uv --version").split()[:2] == ["uv", "0.13.8"]
    assert _run_ok(host, "/usr/local/bin/uvx --version").split()[1] == "0.13.8"
    # The wheel it came from is kept, checked against the digest pinned in the role.
    wheel = host.file("/var/cache/dgxspark/uv/uv-0.13.8-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
    assert wheel.sha256sum == "e18a57b8b352eb7c8feb317b9f6f533c8f0ad9673fd6cf34bbe3cf1a9f6a8984"


# --- vllm_venv ------------------------------------------------------------------------------------------

def test_the_venv_runs_the_requested_host_python_and_belongs_to_the_system_user(host):
    user = host.user("vllm")
    assert user.exists and user.uid < 1000 and user.group == "vllm"
    assert user.home == "/opt/vllm" and user.shell == "/usr/sbin/nologin"
    for path in (VENV, VENV + "/pyvenv.cfg", VENV + "/bin", "/opt/vllm/.cache/uv", "/opt/vllm/tools"):
        assert host.file(path).user == "vllm", path
        assert host.file(path).group == "vllm", path
    assert _run_ok(host, PY + " -c 'import sys; print(sys.version_info[:2])'") == "(3, 11)"
    # Built on the system interpreter, not on a Python uv downloaded.
    assert "home = /usr/bin" in host.file(VENV + "/pyvenv.cfg").content_string
    assert not host.file("/opt/vllm/.local/share/uv/python").exists


def test_the_pinned_vllm_wheel_and_its_companions_are_installed(host):
    versions = json.loads(_run_ok(host, PY + " -c " + shlex.quote(
        "import json; from importlib import metadata as m; "
        "print(json.dumps({n: m.version(n) for n in ['vllm', 'torch', 'triton', 'numpy', 'packaging', 'regex']}))")))
    assert versions == {"vllm": "0.33.0", "torch": "2.13.0+cpu", "triton": "3.9.0", "numpy": "2.4.6",
                        "packaging": "26.3", "regex": "2026.11.15"}
    site = _run_ok(host, PY + " -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])'")
    # The real files later roles patch are there (the FA2 extension and the interface module).
    assert host.file(site + "/vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so").size > 1_000_000
    assert host.file(site + "/vllm/vllm_flash_attn/flash_attn_interface.py").contains("def _is_fa4_supported")


def test_vllm_attention_code_imports_in_the_venv(host):
    """The real vLLM 0.33.0 module imports with the CPU torch. Its CUDA extension needs libcuda, so a dummy module
    stands in for _vllm_fa2_C only (FACTS.md section 4); everything else is the installed code."""
    code = (
        "import sys, types; sys.modules['vllm.vllm_flash_attn._vllm_fa2_C'] = types.ModuleType('_vllm_fa2_C'); "
        "import torch, vllm.vllm_flash_attn.flash_attn_interface as f; "
        "print(torch.__version__, f.FA4_AVAILABLE, callable(f._is_fa4_supported))"
    )
    assert _run_ok(host, "runuser -u vllm -- %s -c %s" % (PY, shlex.quote(code))) == "2.13.0+cpu True True"


def test_triton_step_recorded_what_it_installed(host):
    manifest = json.loads(host.file(VENV + "/.dgxspark-triton.json").content_string)
    assert manifest == {"spec": "triton==3.9.0", "source": "/srv/wheelhouse", "version": "3.9.0"}


def test_build_prerequisites_and_a_recent_cmake(host):
    for name in ("python3-dev", "git", "cmake", "ninja-build", "g++"):
        assert host.package(name).is_installed, name
    # Debian 12's apt CMake is 3.25, too old, so the role installed one from the wheelhouse into the tools venv.
    assert host.package("cmake").version.startswith("3.25")
    out = _run_ok(host, "/opt/vllm/tools/bin/cmake --version")
    assert out.split()[2] == "3.31.10"


# --- cuda_env -------------------------------------------------------------------------------------------

EXPECTED_ENV = {
    "TORCH_CUDA_ARCH_LIST": "12.1a",  # no GPU in the container: the documented fallback
    "CUDA_HOME": "/usr/local/cuda",
    "TRITON_PTXAS_PATH": "/usr/local/cuda/bin/ptxas",
    "PATH": "/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
}


def test_environment_file_holds_the_values(host):
    env_file = host.file("/etc/dgxspark/cuda.env")
    assert env_file.user == "root" and env_file.mode == 0o644
    text = env_file.content_string
    assert "Ansible managed" in text.splitlines()[1]
    pairs = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert pairs == EXPECTED_ENV


def test_systemd_reads_the_environment_file(host):
    out = _run_ok(host, "systemd-run --quiet --wait --pipe -p EnvironmentFile=/etc/dgxspark/cuda.env "
                        "/usr/bin/env")
    seen = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    for name, value in EXPECTED_ENV.items():
        assert seen.get(name) == value, name


def test_login_shells_get_the_values_once(host):
    profile = host.file("/etc/profile.d/dgxspark-cuda.sh")
    assert profile.mode == 0o644 and "Ansible managed" in profile.content_string
    out = _run_ok(host, "env -i PATH=/usr/bin:/bin bash -lc '. /etc/profile.d/dgxspark-cuda.sh; "
                        "echo $TORCH_CUDA_ARCH_LIST; echo $CUDA_HOME; echo $TRITON_PTXAS_PATH; echo $PATH'")
    arch, home, ptxas, path = out.splitlines()
    assert (arch, home, ptxas) == ("12.1a", "/usr/local/cuda", "/usr/local/cuda/bin/ptxas")
    assert path.split(":")[0] == "/usr/local/cuda/bin"
    assert path.split(":").count("/usr/local/cuda/bin") == 1


def test_triton_ptxas_path_is_the_toolkits_ptxas(host):
    assert "Cuda compilation tools, release 13" in _run_ok(host, "/usr/local/cuda/bin/ptxas --version")


# --- page_cache -----------------------------------------------------------------------------------------

def _journal(host):
    return _run_ok(host, "journalctl -t dgxspark-drop-caches -o cat --no-pager").splitlines()


def test_the_converge_really_dropped_and_the_read_only_case_was_reported(host):
    lines = _journal(host)
    dropped = [line for line in lines if line.startswith("dropped (level 3)")]
    assert dropped, lines
    # side_effect remounted /proc/sys read-only: once skipped (not required), once failed (required).
    assert any(line.startswith("skipped (level 3)") and "read-only" in line for line in lines), lines
    assert any(line.startswith("failed (level 3)") and "read-only" in line for line in lines), lines


def test_the_helper_really_evicts_a_file_from_the_page_cache(host):
    probe = "/var/tmp/dgxspark-page-cache-probe"
    _run_ok(host, "dd if=/dev/urandom of=%s bs=1M count=16 status=none && cat %s >/dev/null" % (probe, probe))
    try:
        resident = int(_run_ok(host, "fincore --bytes --noheadings --raw --output RES " + probe))
        assert resident > 0
        outcome = json.loads(_run_ok(host, "/usr/local/sbin/dgxspark-drop-caches --json"))
        assert outcome["result"] == "dropped" and outcome["rc"] == 0
        assert int(_run_ok(host, "fincore --bytes --noheadings --raw --output RES " + probe)) == 0
        assert json.loads(host.file("/run/dgxspark/drop-caches.json").content_string)["result"] == "dropped"
    finally:
        host.run("rm -f " + probe)


@pytest.mark.parametrize("args, rc, message", [
    ("--level 4", 2, "--level must be 1, 2 or 3, not '4'"),
    ("--min-available-mib lots", 2, "--min-available-mib must be a whole number, not 'lots'"),
    ("--bogus", 2, "unknown argument '--bogus'"),
    ("--min-available-mib 999999999 --timeout 1 --interval 1", 4, "stayed below 999999999 MiB for 1 s"),
])
def test_the_helper_exit_codes(host, args, rc, message):
    result = host.run("/usr/local/sbin/dgxspark-drop-caches " + args)
    assert result.rc == rc, result.stderr
    assert message in result.stderr


def test_the_helper_refuses_to_run_unprivileged(host):
    result = host.run("runuser -u vllm -- /usr/local/sbin/dgxspark-drop-caches --json")
    assert result.rc == 3
    assert json.loads(result.stdout)["reason"].startswith("needs root")
