"""The tiny model fixture (tests/fixtures/tiny_model.py): built once, the same bytes every time, and laid out as a
Hugging Face hub cache entry that resolves to the same files.

This builds the model a second time from scratch (about 40 s: torch, transformers and tokenizers in the
fixture's own venv) and compares every file's sha256 and the reference answer with the cached build."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))

import tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def built():
    return tiny_model.ensure()


def test_a_second_build_has_the_same_bytes_and_the_same_answer(built, tmp_path):
    python = Path(tiny_model.CACHE) / "venv" / "bin" / "python"
    proc = subprocess.run([str(python), str(tiny_model.HERE), "build", "--dest", str(tmp_path / "again")],
                          capture_output=True, text=True, check=False,
                          env={"PATH": "/usr/bin:/bin", "RAYON_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                               "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    cached = json.loads(Path(built["manifest"]).read_text())
    again = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert again == cached
    assert sorted(cached["files"]) == ["chat_template.jinja", "config.json", "generation_config.json",
                                       "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    reference = json.loads(Path(built["reference"]).read_text())
    assert json.loads((tmp_path / "again" / "reference.json").read_text()) == reference


def test_model_shape_and_reference(built):
    config = json.loads((Path(built["model_dir"]) / "config.json").read_text())
    assert (config["architectures"], config["hidden_size"], config["num_attention_heads"], config["head_dim"],
            config["num_hidden_layers"], config["intermediate_size"], config["vocab_size"]) == \
        (["LlamaForCausalLM"], 128, 4, 32, 2, 256, 2048)
    reference = json.loads(Path(built["reference"]).read_text())
    assert reference["question"] == tiny_model.QUESTION
    assert reference["answer"] == built["reference_answer"] and reference["answer"].strip()
    assert reference["answer"].isascii()
    assert len(reference["answer_token_ids"]) == tiny_model.MAX_TOKENS and reference["finish_reason"] == "length"
    assert reference["min_logit_margin"] >= tiny_model.MIN_MARGIN


def test_hf_cache_layout_resolves_to_the_same_files(built, tmp_path):
    snapshot = tiny_model.hf_cache(Path(built["model_dir"]), "dgxspark-test/tiny-llama", tmp_path / "hub")
    repo = tmp_path / "hub" / "models--dgxspark-test--tiny-llama"
    assert (repo / "refs" / "main").read_text() == snapshot.name
    manifest = json.loads(Path(built["manifest"]).read_text())["files"]
    for name, info in manifest.items():
        link = snapshot / name
        assert link.is_symlink() and hashlib.sha256(link.read_bytes()).hexdigest() == info["sha256"]
    # Laying it out again changes nothing.
    assert tiny_model.hf_cache(Path(built["model_dir"]), "dgxspark-test/tiny-llama", tmp_path / "hub") == snapshot
