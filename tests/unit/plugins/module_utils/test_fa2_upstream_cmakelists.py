"""The patch on flash-attention's own CMakeLists.txt, as fetched from vllm-project/flash-attention.

Upstream sources are never committed here, so the files come from a directory named by the environment
variable DGXSPARK_FA_CMAKELISTS_DIR, holding <commit>.CMakeLists.txt files (for instance written with
`git --git-dir <mirror> show <commit>:CMakeLists.txt`). Without it the test is skipped and says so.
For each file: the stock tree configures FA2 as 8.0+PTX and collapses a 12.1 target to 12.0; the patch for
12.1 (and for the seed's 8.0;12.1) edits exactly two lines, the CUDA >= 13.0 list(APPEND) and the FA2 call,
leaves the CUDA 12.8 branch alone, and a second patch changes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ansible_collections.dgxspark.vllm.plugins.module_utils import fa2_source as fs

SOURCE_DIR = os.environ.get("DGXSPARK_FA_CMAKELISTS_DIR", "")
FILES = sorted(Path(SOURCE_DIR).glob("*.CMakeLists.txt")) if SOURCE_DIR else []

pytestmark = pytest.mark.skipif(
    not FILES, reason="no upstream CMakeLists.txt files: set DGXSPARK_FA_CMAKELISTS_DIR to a directory of "
                      "<commit>.CMakeLists.txt taken from vllm-project/flash-attention")


@pytest.mark.parametrize("path", FILES, ids=[p.name.split(".")[0][:8] for p in FILES])
@pytest.mark.parametrize("targets", [["12.1"], ["8.0", "12.1"]], ids=["12.1", "8.0;12.1"])
def test_upstream_cmakelists(path, targets):
    text = path.read_text()
    assert fs.simulate(text, targets, "13.0")["fa2_archs"] == ["8.0+PTX"]
    assert fs.simulate(text, ["12.1"], "13.0")["cuda_archs"] == ["12.0"]
    new, info = fs.patch_cmakelists(text, targets, "13.0")
    assert info["after"] == targets
    changed = [(a.strip(), b.strip()) for a, b in zip(text.splitlines(), new.splitlines()) if a != b]
    assert changed == [
        ('list(APPEND CUDA_SUPPORTED_ARCHS "10.0" "11.0" "12.0")', 'list(APPEND CUDA_SUPPORTED_ARCHS "10.0" "11.0" "12.0" "12.1")'),
        ('cuda_archs_loose_intersection(FA2_ARCHS "8.0+PTX" "${CUDA_ARCHS}")',
         'cuda_archs_loose_intersection(FA2_ARCHS "%s" "${CUDA_ARCHS}")' % ";".join(targets)),
    ]
    assert 'list(APPEND CUDA_SUPPORTED_ARCHS "10.0" "10.1" "12.0")' in new
    assert fs.patch_cmakelists(new, targets, "13.0") == (new, dict(info, before=targets, changes=[], status="unchanged"))
