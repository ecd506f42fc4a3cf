"""The test project's cmake arch intersection (tests/fixtures/fa2_test_project/cmake/utils.cmake), run by real cmake
in script mode, must agree with the Python model the patch relies on (plugins/module_utils/fa2_source.py), and both
must give the collapse table of FACTS.md section 3. cmake >= 3.26 comes from PyPI into .cache/venvs.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fa2_support  # noqa: E402

from ansible_collections.dgxspark.vllm.plugins.module_utils import fa2_source as fs  # noqa: E402

SUPPORTED_STOCK = ["8.0", "8.6", "8.9", "9.0", "10.0", "11.0", "12.0"]        # CUDA >= 13.0, as shipped
SUPPORTED_PATCHED = SUPPORTED_STOCK + ["12.1"]


def cmake_intersections(cases):
    """Run cuda_archs_loose_intersection for each (src, tgt) case in one cmake -P call."""
    lines = ['include("%s/cmake/utils.cmake")' % fa2_support.FIXTURE]
    for index, (src, tgt) in enumerate(cases):
        lines.append('cuda_archs_loose_intersection(OUT "%s" "%s")' % (";".join(src), ";".join(tgt)))
        lines.append('message("CASE %d=${OUT}")' % index)
    script = fa2_support.VENVS / "fa2-intersection-cases.cmake"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text("\n".join(lines) + "\n")
    proc = subprocess.run([str(fa2_support.buildtools()["cmake"]), "-P", str(script)], capture_output=True, text=True,
                          check=True)
    results = {}
    for line in proc.stderr.splitlines():
        if line.startswith("CASE "):
            key, _sep, value = line[5:].partition("=")
            results[int(key)] = [v for v in value.split(";") if v]
    return [results[i] for i in range(len(cases))]


def test_cmake_function_agrees_with_the_python_model():
    archs = ["8.0", "8.6", "9.0", "9.0a", "10.0", "12.0", "12.1", "12.1a"]
    sources = [["8.0+PTX"], ["8.0", "12.1"], ["8.0+PTX", "12.0", "12.1"], SUPPORTED_STOCK, SUPPORTED_PATCHED,
               ["9.0a"], ["8.0", "12.1+PTX"], []]
    targets = [list(t) for n in (1, 2) for t in itertools.combinations(archs, n)]
    cases = [(src, tgt) for src in sources for tgt in targets]
    got = cmake_intersections(cases)
    mismatches = [(src, tgt, cm, fs.loose_intersection(src, tgt))
                  for (src, tgt), cm in zip(cases, got) if cm != fs.loose_intersection(src, tgt)]
    assert mismatches == [], mismatches[:10]
    assert len(cases) > 200


def test_collapse_table_with_real_cmake():
    """Stock / only the FA2 line changed / both changes, for targets 12.1 and 8.0;12.1."""
    rows = []
    for supported, fa2 in ((SUPPORTED_STOCK, ["8.0+PTX"]), (SUPPORTED_STOCK, ["8.0", "12.1"]),
                           (SUPPORTED_PATCHED, ["8.0", "12.1"])):
        for target in (["12.1"], ["8.0", "12.1"]):
            cuda_archs = cmake_intersections([(supported, target)])[0]
            rows.append(cmake_intersections([(fa2, cuda_archs)])[0])
    assert rows == [["8.0+PTX"], ["8.0+PTX"], [], ["8.0"], ["12.1"], ["8.0", "12.1"]]
