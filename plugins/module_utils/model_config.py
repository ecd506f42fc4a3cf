# -*- coding: utf-8 -*-
# Copyright: dgxspark.vllm contributors
# Apache License 2.0 (see LICENSE)
"""Find a model's config.json (a local path or the local Hugging Face cache) and read its head dim.

Plain functions with no Ansible imports, so they can be unit tested directly.

The cache lookup is huggingface_hub's own (try_to_load_from_cache) where the module's Python has
huggingface_hub. Usually it has not: the module runs with the host's Python, and huggingface_hub lives in the
vLLM venv. For that case this file keeps its own reader of the cache layout, which huggingface_hub documents
(<cache>/models--<org>--<name>/refs/<branch> holding a commit, snapshots/<commit>/config.json); it also falls
back to the newest snapshot when the branch is not recorded, and says what it tried when nothing is found.
"""

from __future__ import annotations

import json
import os
import re

# Where multimodal and wrapper configs keep the language model's settings.
NESTED = ("text_config", "llm_config", "language_config")
_HASH = re.compile(r"^[0-9a-f]{40}$")


class ModelConfigError(ValueError):
    """Raised when a config cannot be found or read; the message names the model and the paths tried."""


def hub_cache(hf_home=None, environ=None):
    """The hub cache directory: $HF_HUB_CACHE, else <hf_home or $HF_HOME or ~/.cache/huggingface>/hub."""
    environ = os.environ if environ is None else environ
    if environ.get("HF_HUB_CACHE") and not hf_home:
        return environ["HF_HUB_CACHE"]
    home = hf_home or environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return os.path.join(home, "hub")


def looks_like_path(model):
    return model.startswith(("/", "./", "../", "~")) or os.path.isdir(os.path.expanduser(model))


def _lookup_with_huggingface_hub(model, cache, revision):
    """config.json of model in cache as huggingface_hub finds it; None when it does not, or is not installed."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(model, "config.json", cache_dir=cache, revision=revision)
    return found if isinstance(found, str) and os.path.isfile(found) else None


def find_config(model, hf_home=None, revision=None, environ=None):
    """Return the path of the model's config.json; raise ModelConfigError naming what was tried."""
    if looks_like_path(model):
        path = os.path.expanduser(model)
        candidate = path if os.path.basename(path) == "config.json" else os.path.join(path, "config.json")
        if os.path.isfile(candidate):
            return candidate
        raise ModelConfigError("model %s: no config.json at %s" % (model, candidate))
    if model.count("/") != 1 or not all(model.split("/")):
        raise ModelConfigError("model %r is neither an existing directory nor a Hugging Face id of the form org/name" % model)
    cache = hub_cache(hf_home, environ)
    found = _lookup_with_huggingface_hub(model, cache, revision)
    if found:
        return found
    repo = os.path.join(cache, "models--" + model.replace("/", "--"))
    snapshots = os.path.join(repo, "snapshots")
    if not os.path.isdir(snapshots):
        raise ModelConfigError("model %s is not in the local Hugging Face cache (no %s)" % (model, snapshots))
    wanted = revision or "main"
    commit = wanted if _HASH.match(wanted) else None
    ref = os.path.join(repo, "refs", wanted)
    if commit is None and os.path.isfile(ref):
        with open(ref) as handle:
            commit = handle.read().strip()
    if commit:
        candidate = os.path.join(snapshots, commit, "config.json")
        if os.path.isfile(candidate):
            return candidate
        if revision:
            raise ModelConfigError("model %s: revision %s has no config.json in the cache (%s)" % (model, revision, candidate))
    if revision and commit is None:
        raise ModelConfigError("model %s: revision %s is not in the cache (no %s)" % (model, revision, ref))
    found = [os.path.join(snapshots, d, "config.json") for d in os.listdir(snapshots)
             if os.path.isfile(os.path.join(snapshots, d, "config.json"))]
    if not found:
        raise ModelConfigError("model %s: no snapshot under %s holds a config.json" % (model, snapshots))
    return max(found, key=os.path.getmtime)


def load_config(path):
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ModelConfigError("cannot read %s: %s" % (path, exc))
    if not isinstance(data, dict):
        raise ModelConfigError("%s does not hold a JSON object" % path)
    return data


def _int(value):
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def head_dim_from_config(config):
    """(head_dim, source) from a config dict; (None, reason) when it cannot be told.

    Order: the top level, then the nested language-model configs (text_config, ...). In each,
    an explicit head_dim wins over hidden_size / num_attention_heads.
    """
    levels = [("", config)] + [(key + ".", config[key]) for key in NESTED if isinstance(config.get(key), dict)]
    for prefix, level in levels:
        explicit = _int(level.get("head_dim"))
        if explicit:
            return explicit, prefix + "head_dim"
        hidden, heads = _int(level.get("hidden_size")), _int(level.get("num_attention_heads"))
        if hidden and heads:
            if hidden % heads:
                return None, "%shidden_size %d is not a multiple of num_attention_heads %d" % (prefix, hidden, heads)
            return hidden // heads, "%shidden_size / %snum_attention_heads" % (prefix, prefix)
    return None, "no head_dim, and no hidden_size with num_attention_heads (top level or %s)" % ", ".join(NESTED)
