"""The flash-attention pin table (FA_COMMITS) against the real vLLM sdists from PyPI, kept in a local cache.

tests/vllm_sdist_pins.py fill .cache/vllm-sdists puts there, for every vLLM release from 0.24.0 on, the
start of its sdist up to cmake/external_projects/vllm_flash_attn.cmake (or a whole sdist may be placed
there), plus index.json, the list PyPI gave. Each release's GIT_TAG must be the table's commit for it, every
release in the list must be in the cache and in the table, and every exact entry of the table must be a
release in the list. Without the cache the test fills it from PyPI first (about 10 MB: only each sdist's start);
where PyPI cannot be reached it is skipped and says how to fill it, except under CI=true, where it fails.
Releases newer than the table's newest are left out with a warning: the role refuses them (it never guesses a
commit), and a release published upstream should not break this project's CI.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import pytest

from ansible_collections.dgxspark.vllm.plugins.module_utils import fa2_source as fs

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "tests"))
import vllm_sdist_pins as pins  # noqa: E402

CACHE = Path(os.environ.get("DGXSPARK_VLLM_SDISTS", ROOT / ".cache" / "vllm-sdists"))


def _fill_or_skip():
    if (CACHE / "index.json").is_file():
        return
    try:
        problems = pins.fill(CACHE)
    except OSError as exc:  # no route to PyPI
        message = "no vLLM sdist cache at %s and PyPI did not answer (%s: %s); fill it with: " \
                  "python3 tests/vllm_sdist_pins.py fill %s" % (CACHE, type(exc).__name__, exc, CACHE)
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    assert problems == 0, "tests/vllm_sdist_pins.py fill %s could not read %d sdist(s)" % (CACHE, problems)


@pytest.fixture(scope="module")
def releases():
    _fill_or_skip()
    found = pins.cached(CACHE)
    assert found, "index.json in %s lists no sdist" % CACHE
    newest = max(pins.version_tuple(k) for k in fs.FA_COMMITS if k.count(".") == 2)
    newer = sorted(v for v in found if pins.version_tuple(v) > newest)
    if newer:
        warnings.warn("vLLM releases newer than the pin table (fa2_native stops on them until added): %s"
                      % ", ".join(newer))
    return {v: e for v, e in found.items() if v not in newer}


def test_every_release_from_0_24_0_is_in_the_cache(releases):
    missing = [v for v, entry in releases.items() if entry["path"] is None]
    assert not missing, "sdists listed in %s/index.json but not cached: %s" % (CACHE, missing)
    assert {"0.24.0", "0.25.0", "0.25.1", "0.27.0", "0.27.1", "0.33.0"} <= set(releases)


def test_the_pin_table_matches_every_sdist(releases):
    wrong = {}
    for version, entry in releases.items():
        pinned = pins.pin_of(pins.read_member(entry["path"]))
        if fs.commit_for_release(version) != pinned:
            wrong[version] = {"sdist": pinned, "table": fs.commit_for_release(version)}
    assert not wrong, wrong


def test_every_exact_table_entry_is_a_release(releases):
    exact = [key for key in fs.FA_COMMITS if key.count(".") == 2]
    assert sorted(set(exact) - set(releases)) == []
    assert len(exact) == len(fs.FA_COMMITS), "series keys could answer for a patch release that moved the pin"


def test_the_check_finds_the_gap_of_the_old_table(releases, monkeypatch):
    """The table before issue 12: series keys with short commits and no 0.25 or 0.27."""
    old = {"0.24": "803020a8", "0.26": "caaa4eb5", "0.28": "f3e1a4f7", "0.29": "06bdd47c", "0.30": "506341a1",
           "0.31": "9cd61de3", "0.32": "9cd61de3", "0.33.0": "b273a02621d3c94bc747df67204f591b67f38fae"}
    monkeypatch.setattr(fs, "FA_COMMITS", old)
    unpinned = sorted(v for v, e in releases.items() if fs.commit_for_release(v) is None)
    assert unpinned == ["0.25.0", "0.25.1", "0.27.0", "0.27.1"]
