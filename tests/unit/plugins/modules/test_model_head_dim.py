"""Unit tests of model_head_dim, run as Ansible runs it, against configs written to a temporary cache."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from ansible_collections.dgxspark.vllm.tests.unit.module_env import module_pythonpath

ROOT = Path(__file__).resolve().parents[4]
MODULE = ROOT / "plugins" / "modules" / "model_head_dim.py"


def run_module(tmp_path, args, env=None):
    argsfile = tmp_path / "args.json"
    argsfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": dict(args, _ansible_check_mode=True)}))
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": module_pythonpath(), "HOME": str(tmp_path)}
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, str(MODULE), str(argsfile)], capture_output=True, text=True, env=full_env, check=False)
    assert proc.stdout, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # ansible-core 2.19 reports warnings as {"event": {"msg": ...}} summaries; older ones as strings
    result["warnings"] = [w["event"]["msg"] if isinstance(w, dict) else w for w in result.get("warnings", [])]
    return result


def cache_model(home, model, config):
    snap = home / ".cache" / "huggingface" / "hub" / ("models--" + model.replace("/", "--")) / "snapshots" / ("d" * 40)
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(config))


def test_head_dim_256_warns(tmp_path):
    cache_model(tmp_path, "Qwen/Qwen3.5-27B", {"text_config": {"head_dim": 256, "hidden_size": 5120, "num_attention_heads": 24}})
    result = run_module(tmp_path, {"model": "Qwen/Qwen3.5-27B"})
    assert result["changed"] is False and result["found"] is True
    assert (result["head_dim"], result["fa4_eligible"], result["source"]) == (256, False, "text_config.head_dim")
    assert any("head_dim 256" in w and "> 128" in w and "no effect" in w for w in result["warnings"])


def test_warnings_name_the_host(tmp_path):
    cache_model(tmp_path, "Qwen/Qwen3.5-27B", {"head_dim": 256})
    named = run_module(tmp_path, {"model": "Qwen/Qwen3.5-27B", "host": "spark-07"})
    assert [w for w in named["warnings"] if w.startswith("spark-07: model Qwen/Qwen3.5-27B has head_dim 256")], named
    # Without the option (a module cannot know its inventory name), the host's own hostname.
    unnamed = run_module(tmp_path, {"model": "Qwen/Qwen3.5-27B"})
    assert [w for w in unnamed["warnings"] if w.startswith(platform.node() + ": model")], unnamed
    missing = run_module(tmp_path, {"model": "org/absent", "host": "spark-07"})
    assert [w for w in missing["warnings"] if w.startswith("spark-07: ")], missing


def test_head_dim_64_is_quiet(tmp_path):
    cache_model(tmp_path, "openai/gpt-oss-120b", {"head_dim": 64, "hidden_size": 2880, "num_attention_heads": 64})
    result = run_module(tmp_path, {"model": "openai/gpt-oss-120b"})
    assert (result["head_dim"], result["fa4_eligible"]) == (64, True)
    assert not result.get("warnings")


def test_hf_home_option_and_env(tmp_path):
    cache_model(tmp_path / "elsewhere", "org/m", {"hidden_size": 4096, "num_attention_heads": 32})
    home = tmp_path / "elsewhere" / ".cache" / "huggingface"
    assert run_module(tmp_path, {"model": "org/m", "hf_home": str(home)})["head_dim"] == 128
    assert run_module(tmp_path, {"model": "org/m"}, env={"HF_HOME": str(home)})["head_dim"] == 128


def test_missing_model_warns_or_fails(tmp_path):
    result = run_module(tmp_path, {"model": "org/absent"})
    assert result["found"] is False and result["head_dim"] is None and "failed" not in result
    assert any("org/absent is not in the local Hugging Face cache" in w for w in result["warnings"])
    result = run_module(tmp_path, {"model": "org/absent", "fail_on_missing": True})
    assert result["failed"] is True and "org/absent" in result["msg"]


def test_bad_json(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{not json")
    result = run_module(tmp_path, {"model": str(tmp_path / "m"), "fail_on_missing": True})
    assert result["failed"] is True and "cannot read" in result["msg"] and str(tmp_path / "m") in result["msg"]
