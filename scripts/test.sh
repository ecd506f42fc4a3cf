#!/usr/bin/env bash
# Test: set up everything the tests need, then run lint (yamllint, ansible-lint, ansible-test sanity and units,
# antsibull-docs), unit, integration tests and the molecule scenarios, all through pytest.
# The last line printed is pytest's summary. Extra arguments go to pytest (e.g. -k default).
#
# Each set-up step checks first and does nothing when its result is already there; the ones that can fail for
# want of something this machine lacks run first, and stop with a message saying what is missing and how to get it:
#   - the toolchain venv .venv (requirements.txt, then requirements-test.txt) and shellcheck (Debian's package);
#   - a CUDA 13.0 toolkit in /usr/local/cuda-13.0, assembled from NVIDIA's PyPI wheels when it is missing (root);
#   - the CPU torch wheel of the host_prep scenario (not on PyPI) in .cache/torch-cpu;
#   - Docker (Debian's docker.io; dockerd is started when it is not running, and left running) and the
#     molecule base image, built from Debian's packages.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
ensure_toolchain
ensure_test_tools
ensure_cuda_toolkit
ensure_torch_cpu_wheel
ensure_docker
ensure_image
ensure_collection_link
activate_toolchain
cd "$DGX_ROOT"
# Two pytest-xdist workers (DGX_TEST_WORKERS=0: none, one process as before): each test file runs whole on one worker,
# the molecule scenarios that serve with the real vLLM on one and the rest on the other (tests/conftest.py).
count=${DGX_TEST_WORKERS:-2}
workers=()
if [[ "$count" != 0 ]]; then
  workers=(-n "$count" --dist loadfile --no-loadscope-reorder)
fi
exec pytest -p no:cacheprovider -ra "${workers[@]}" tests/lint tests/unit tests/integration tests/molecule "$@"
