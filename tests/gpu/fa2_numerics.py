"""Run the fa2_native numerics harness on a GPU machine, for the record.

    python3 tests/gpu/fa2_numerics.py                 # self-test: known-good vs deliberately wrong functions
    python3 tests/gpu/fa2_numerics.py --library X.so  # a real _vllm_fa2_C.abi3.so (torch.ops path)

Needs only torch with CUDA (e.g. 2.11+cu130); no network, no vLLM, no FA2 library for the self-test.
It runs roles/fa2_native/files/fa2_numerics.py, the same file the role ships to hosts, and passes
--self-test --json unless other arguments are given. Expected ending of a good self-test run:
"self-test PASSED on <GPU name> (12 cases each, N s)" and exit code 0.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[2] / "roles" / "fa2_native" / "files" / "fa2_numerics.py"

if __name__ == "__main__":
    args = sys.argv[1:] or ["--self-test", "--json"]
    sys.argv = [str(HARNESS)] + args
    harness = runpy.run_path(str(HARNESS))
    sys.exit(harness["main"](args))
