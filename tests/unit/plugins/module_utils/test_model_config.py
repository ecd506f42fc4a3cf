"""Unit tests of module_utils/model_config.py: head dims from config dicts, and finding config.json."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ansible_collections.dgxspark.vllm.tests.unit.module_env import module_pythonpath
from ansible_collections.dgxspark.vllm.plugins.module_utils.model_config import (
    ModelConfigError,
    find_config,
    head_dim_from_config,
    hub_cache,
)

# Shaped like the real configs (only the fields that matter here).
GPT_OSS = {"architectures": ["GptOssForCausalLM"], "hidden_size": 2880, "num_attention_heads": 64, "head_dim": 64}
LLAMA3_8B = {"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "num_attention_heads": 32}
QWEN35_VL = {"architectures": ["Qwen3_5ForConditionalGeneration"],
             "text_config": {"hidden_size": 5120, "num_attention_heads": 24, "head_dim": 256},
             "vision_config": {"hidden_size": 1152, "num_heads": 16}}


@pytest.mark.parametrize("config,expected", [
    (GPT_OSS, (64, "head_dim")),
    (LLAMA3_8B, (128, "hidden_size / num_attention_heads")),
    (QWEN35_VL, (256, "text_config.head_dim")),
    ({"text_config": {"hidden_size": 2048, "num_attention_heads": 8}}, (256, "text_config.hidden_size / text_config.num_attention_heads")),
    ({"head_dim": None, "hidden_size": 3072, "num_attention_heads": 24}, (128, "hidden_size / num_attention_heads")),
])
def test_head_dim(config, expected):
    assert head_dim_from_config(config) == expected


@pytest.mark.parametrize("config,reason", [
    ({"hidden_size": 1000, "num_attention_heads": 3}, "not a multiple"),
    ({"model_type": "x"}, "no head_dim"),
    ({"head_dim": True, "num_attention_heads": 8}, "no head_dim"),
])
def test_head_dim_unknown(config, reason):
    value, why = head_dim_from_config(config)
    assert value is None and reason in why


def _snapshot(hub, model, commit, config, ref="main"):
    repo = hub / ("models--" + model.replace("/", "--"))
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(config))
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)  # as huggingface_hub writes it, without a newline
    return snap / "config.json"


def test_find_in_the_cache_by_refs_main(tmp_path):
    hub = tmp_path / "hf" / "hub"
    old = _snapshot(hub, "openai/gpt-oss-120b", "a" * 40, GPT_OSS, ref=None)
    main = _snapshot(hub, "openai/gpt-oss-120b", "b" * 40, GPT_OSS)
    os.utime(old, (time.time() + 100, time.time() + 100))  # newer file, but refs/main wins
    assert find_config("openai/gpt-oss-120b", hf_home=str(tmp_path / "hf")) == str(main)
    assert find_config("openai/gpt-oss-120b", hf_home=str(tmp_path / "hf"), revision="a" * 40) == str(old)


def test_find_newest_snapshot_without_refs(tmp_path):
    hub = tmp_path / "hub"
    first = _snapshot(hub, "org/m", "1" * 40, LLAMA3_8B, ref=None)
    second = _snapshot(hub, "org/m", "2" * 40, LLAMA3_8B, ref=None)
    os.utime(first, (time.time() + 100, time.time() + 100))
    assert find_config("org/m", environ={"HF_HUB_CACHE": str(hub)}) == str(first)
    assert second.is_file()


def test_find_by_path(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    assert find_config(str(tmp_path / "model")) == str(tmp_path / "model" / "config.json")
    assert find_config(str(tmp_path / "model" / "config.json")) == str(tmp_path / "model" / "config.json")


@pytest.mark.parametrize("model,kwargs,message", [
    ("org/absent", {}, "is not in the local Hugging Face cache"),
    ("not-an-id", {}, "neither an existing directory nor a Hugging Face id"),
    ("/nonexistent/model", {}, "no config.json at /nonexistent/model/config.json"),
    ("org/m", {"revision": "v2"}, "revision v2 is not in the cache"),
])
def test_find_errors_name_the_model(tmp_path, model, kwargs, message):
    _snapshot(tmp_path / "hub", "org/m", "c" * 40, GPT_OSS)
    with pytest.raises(ModelConfigError, match=message):
        find_config(model, environ={"HF_HUB_CACHE": str(tmp_path / "hub")}, **kwargs)


def test_hub_cache_resolution():
    assert hub_cache(environ={"HF_HOME": "/h"}) == "/h/hub"
    assert hub_cache(environ={"HF_HUB_CACHE": "/c", "HF_HOME": "/h"}) == "/c"
    assert hub_cache("/explicit", environ={"HF_HUB_CACHE": "/c"}) == "/explicit/hub"


# ---- with the real huggingface_hub (PyPI) importable, as in a Python that has it ----------------------------

HUB_PIN = "huggingface_hub==2.4.0"  # the release the vLLM 0.33.0 venvs of the FA4 tests resolve to
ROOT = Path(__file__).resolve().parents[4]


def hub_site():
    """huggingface_hub and its dependencies, installed once with pip --target under .cache/pip-target."""
    dest = ROOT / ".cache" / "pip-target" / ("%s-deps-cp%d%d" % (HUB_PIN.replace("==", "-"), *sys.version_info[:2]))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(str(dest) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (dest / ".complete").is_file():
            tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                            "--target", str(tmp), HUB_PIN], check=True)
            (tmp / ".complete").write_text(HUB_PIN + "\n")
            if dest.exists():
                shutil.rmtree(dest)
            tmp.rename(dest)
    return dest


PROBE = r"""
import json, sys
from ansible_collections.dgxspark.vllm.plugins.module_utils import model_config as mc
cases = json.loads(sys.argv[1])
out = []
for model, cache, revision in cases:
    via_hub = mc._lookup_with_huggingface_hub(model, cache, revision)
    try:
        found = mc.find_config(model, revision=revision, environ={"HF_HUB_CACHE": cache})
    except mc.ModelConfigError as exc:
        found = "error: %s" % exc
    out.append([via_hub, found])
print(json.dumps(out))
"""


def test_huggingface_hub_finds_what_the_own_reader_finds(tmp_path):
    """The same lookups with huggingface_hub importable (its try_to_load_from_cache answers first) and here,
    where it is not (the module's own reader of the cache layout answers)."""
    hub = tmp_path / "hub"
    old = _snapshot(hub, "openai/gpt-oss-120b", "a" * 40, GPT_OSS, ref=None)
    main = _snapshot(hub, "openai/gpt-oss-120b", "b" * 40, GPT_OSS)
    _snapshot(hub, "org/unreferenced", "1" * 40, LLAMA3_8B, ref=None)
    _snapshot(hub, "org/tagged", "2" * 40, LLAMA3_8B, ref="v1")
    cases = [["openai/gpt-oss-120b", str(hub), None], ["openai/gpt-oss-120b", str(hub), "a" * 40],
             ["org/tagged", str(hub), "v1"], ["org/unreferenced", str(hub), None], ["org/absent", str(hub), None]]
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(cases)], capture_output=True, text=True,
                          check=False, env=dict(os.environ, PYTHONPATH=module_pythonpath(hub_site())))
    assert proc.returncode == 0, proc.stderr
    with_hub = json.loads(proc.stdout)
    assert [via for via, _found in with_hub] == [str(main), str(old), str(hub / "models--org--tagged" / "snapshots" / ("2" * 40) / "config.json"),
                                                 None, None]
    for (model, cache, revision), (_via, found) in zip(cases, with_hub):
        try:
            here = find_config(model, revision=revision, environ={"HF_HUB_CACHE": cache})
        except ModelConfigError as exc:
            here = "error: %s" % exc
        assert found == here, (model, revision)
