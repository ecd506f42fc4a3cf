"""Unit tests of vllm_verify, run as Ansible runs it, against venvs holding stand-in vllm packages.

The venvs are bare (python -m venv --without-pip); their site-packages hold the stand-in vllm
and torch of tests/unit/roles/fa4_shim/standin_vllm.py (not vLLM: only the patched names),
the shim with its .pth as the role installs them, and the stand-in SM120 kernel directory.
The stand-in platform reports the capability in $STANDIN_CAPABILITY, passed through the
module's environment option. The same module runs against the real vLLM wheels in
tests/integration/fa4_shim/test_real_vllm.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.dgxspark.vllm.tests.unit.module_env import module_pythonpath

ROOT = Path(__file__).resolve().parents[4]
COLLECTIONS = ROOT / ".cache" / "collections"
MODULE = ROOT / "plugins" / "modules" / "vllm_verify.py"
sys.path.insert(0, str(ROOT / "tests" / "unit" / "roles" / "fa4_shim"))
import standin_vllm  # noqa: E402

sys.path.insert(0, str(COLLECTIONS))
from ansible_collections.dgxspark.vllm.plugins.module_utils import vllm_probe  # noqa: E402


def run_module(tmp_path, args, check_mode=False):
    argsfile = tmp_path / "args.json"
    payload = dict(args)
    if check_mode:
        payload["_ansible_check_mode"] = True
    argsfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": payload}))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": module_pythonpath()}
    proc = subprocess.run([sys.executable, str(MODULE), str(argsfile)], capture_output=True, text=True, env=env, check=False)
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def venv(tmp_path):
    def make(shape="seven", shim="dgxspark", kernel_dir=standin_vllm.STANDIN_KERNEL):
        path = tmp_path / "venv"
        site = standin_vllm.make_venv(path)
        standin_vllm.write_vllm(site, shape)
        if shim == "dgxspark":
            standin_vllm.install_shim(site, kernel_dir)
        elif shim == "seed":
            standin_vllm.install_seed_style(site)
        return str(path)
    return make


def verify(tmp_path, venv_path, capability, **options):
    args = {"venv_path": venv_path, "environment": {"STANDIN_CAPABILITY": capability}}
    args.update(options)
    return run_module(tmp_path, args)


@pytest.mark.parametrize("shape", ["four", "seven"])
def test_sm12x_passes_with_the_seed_expectations(tmp_path, venv, shape):
    result = verify(tmp_path, venv(shape), "12.1")
    assert result["passed"] is True, result.get("msg") or result["problems"]
    assert result["changed"] is False and result["problems"] == []
    report = result["report"]
    assert report["mode"] == "sm12x" and report["capability"] == "12.1"
    assert report["hook_installed"] is True and report["fa4_available"] is True
    assert report["is_fa4_supported"] == [True, None]
    assert (report["fa_version_hd128"], report["fa_version_hd256"]) == (4, 2)
    assert report["flash_attn_fwd_qualname"] == "_patch_cute_iface.<locals>._dispatch"
    assert report["shim"]["kernel_loaded"] is True and report["shim"]["kernel_revision"] == "standin"
    assert len(report["installed_signature"]) == {"four": 4, "seven": 7}[shape]
    names = [c["check"] for c in result["checks"]]
    assert any(n.startswith("get_flash_attn_version as called at v1/attention/backends/flash_attn.py") for n in names)
    assert report["fa2_library"]["available"] is False and report["fa2_library"]["reason"]


def test_check_mode_reports_the_same_and_changes_nothing(tmp_path, venv):
    path = venv()
    result = run_module(tmp_path, {"venv_path": path, "environment": {"STANDIN_CAPABILITY": "12.1"}}, check_mode=True)
    assert result["changed"] is False and result["passed"] is True


def test_assume_capability_is_a_listed_stand_in(tmp_path, venv):
    result = verify(tmp_path, venv(), "", assume_capability="12.1")
    assert result["passed"] is True, result.get("msg")
    report = result["report"]
    assert report["real_capability"] is None and report["capability"] == "12.1"
    assert (report["fa_version_hd128"], report["fa_version_hd256"]) == (4, 2)
    assert any("assume_capability, a test aid" in s for s in report["stand_ins"])


def test_without_gpu_checks_hook_names_and_pass_through(tmp_path, venv):
    result = verify(tmp_path, venv(), "")
    assert result["passed"] is True, result.get("msg")
    report = result["report"]
    assert report["mode"] == "no-gpu" and report["fa_version_hd128"] is None
    checks = {c["check"]: c for c in result["checks"]}
    assert checks["hook installed"]["ok"]
    assert all(checks["%s patched" % n]["ok"] for n in ("_is_fa4_supported", "get_flash_attn_version", "_flash_attn_fwd"))
    accepted = [c for n, c in checks.items() if n.startswith("get_flash_attn_version(requires_alibi=False")]
    assert len(accepted) == 2 and all(c["ok"] for c in accepted)
    assert "kv_cache_block_size=16" in accepted[0]["check"]
    assert not any("head size 128" in n for n in checks), "no GPU: the SM12x values are not judged"


def test_other_gpu_expects_vllms_own_answers(tmp_path, venv):
    result = verify(tmp_path, venv(), "9.0")
    assert result["passed"] is True, result.get("msg")
    checks = {c["check"]: c for c in result["checks"]}
    assert checks["get_flash_attn_version(head_size=128) unchanged off SM12x"]["seen"] == 3
    assert checks["_is_fa4_supported() unchanged off SM12x"]["ok"]


def test_seed_style_fixed_wrapper_fails_on_the_seven_parameter_signature(tmp_path, venv):
    """The recipe's own checks pass with this shim (head_size only); vllm_verify must fail it."""
    path = venv("seven", shim="seed")
    recipe = subprocess.run(
        [os.path.join(path, "bin", "python"), "-c",
         "import vllm.v1.attention.backends.fa_utils as f; print(f.get_flash_attn_version(head_size=128), "
         "f.get_flash_attn_version(head_size=256))"],
        capture_output=True, text=True, env={"STANDIN_CAPABILITY": "12.1", "PATH": "/usr/bin:/bin"}, check=True)
    assert recipe.stdout.split() == ["4", "2"], "the recipe's own 5.2-style checks pass"
    result = verify(tmp_path, path, "12.1")
    assert result["failed"] is True and result["passed"] is False
    assert any("unexpected keyword argument 'requires_softcap'" in p for p in result["problems"]), result["problems"]
    assert "get_flash_attn_version for head size 128: expected 4, got None" in result["problems"]
    assert "does not match the expectations" in result["msg"] and "TypeError" in result["msg"]
    # the rest of what the recipe checks does hold
    checks = {c["check"]: c for c in result["checks"]}
    assert checks["hook installed"]["ok"] and checks["_flash_attn_fwd qualname"]["ok"]
    assert checks["_is_fa4_supported()"]["ok"]


def test_seed_style_fixed_wrapper_fails_without_gpu_too(tmp_path, venv):
    result = verify(tmp_path, venv("seven", shim="seed"), "", fail_on_mismatch=False)
    assert result["passed"] is False and "failed" not in result
    assert any("TypeError" in p for p in result["problems"])


def test_seed_style_wrapper_is_fine_on_the_four_parameter_signature(tmp_path, venv):
    result = verify(tmp_path, venv("four", shim="seed"), "12.1")
    assert result["passed"] is True, result.get("msg")


def test_missing_kernel_fails_with_a_readable_difference(tmp_path, venv):
    result = verify(tmp_path, venv(kernel_dir=tmp_path / "nowhere"), "12.1")
    assert result["failed"] is True
    assert "get_flash_attn_version for head size 128: expected 4, got 2" in result["problems"]
    assert "SM120 kernel loaded: expected True, got False" in result["problems"]
    assert "missing __init__.py" in result["report"]["shim"]["kernel_error"]


def test_absent_shim(tmp_path, venv):
    path = venv(shim=None)
    assert verify(tmp_path, path, "12.1", expect_shim=False)["passed"] is True
    result = verify(tmp_path, path, "12.1")
    assert result["failed"] is True and "hook installed: expected True, got False" in result["problems"]
    assert "get_flash_attn_version patched: expected \"not vLLM's own function\", got 'vllm'" in result["problems"]


def test_kill_switch_environment(tmp_path, venv):
    result = verify(tmp_path, venv(), "12.1", environment={"STANDIN_CAPABILITY": "12.1", "FA4_SM120_SHIM": "0"},
                    expect_shim=False)
    assert result["passed"] is True, result.get("msg")
    assert result["report"]["fa_version_hd128"] == 2 and result["report"]["shim"]["enabled"] is False


def test_bad_options(tmp_path):
    result = run_module(tmp_path, {"venv_path": str(tmp_path / "none")})
    assert result["failed"] and "is not an executable Python" in result["msg"] and str(tmp_path / "none") in result["msg"]
    result = run_module(tmp_path, {"venv_path": sys.prefix, "assume_capability": "sm121"})
    assert result["failed"] and "'sm121'" in result["msg"]


def test_probe_failure_before_report(tmp_path):
    path = tmp_path / "venv"
    standin_vllm.make_venv(path)
    result = run_module(tmp_path, {"venv_path": str(path), "environment": {"PYTHONSTARTUP": "x"}, "timeout": 30})
    # no vllm at all: the probe reports the import error as a failed check
    assert result["failed"] is True and "import vllm: expected 'no error'" in result["msg"]


@pytest.mark.parametrize("sass,capability,expected", [
    (["sm_121", "sm_80"], "12.1", True), (["sm_121a"], "12.1", True), (["sm_120"], "12.1", False),
    (["sm_80"], None, False), (["sm_120"], None, True), ([], "12.1", False), (None, None, False)])
def test_fa2_native(sass, capability, expected):
    assert vllm_probe.fa2_native(sass, capability) is expected


def test_problem_lines_are_readable():
    checks = [{"check": "_is_fa4_supported()", "expected": (True, None), "seen": (False, "only 9.x"), "ok": False},
              {"check": "x", "expected": 1, "seen": 1, "ok": True}]
    assert vllm_probe.problems(checks) == ["_is_fa4_supported(): expected (True, None), got (False, 'only 9.x')"]


def test_expect_fa2_native_is_judged():
    raw = {"shim_loaded": True, "shim_status": {"finder_installed": True}, "capability": None, "errors": {}}
    report = vllm_probe.summarize(raw)
    report["fa2_library"] = {"available": True, "sass_archs": ["sm_80"], "ptx_archs": ["sm_80"], "native": False}
    checks = vllm_probe.judge(raw, report, expect_fa2_native=True)
    assert "FA2 library has native sm_12x code: expected True, got False" in vllm_probe.problems(checks)
    assert not any("FA2" in c["check"] for c in vllm_probe.judge(raw, report))
