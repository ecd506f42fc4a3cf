#!/usr/bin/env bash
# Test: set up everything the tests need from scratch (Docker engine, base image, toolchain),
# then run lint, unit and integration tests and the molecule scenarios, all through pytest.
# The last line printed is pytest's summary. Extra arguments go to pytest (e.g. -k default).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
ensure_docker
ensure_image
ensure_toolchain
ensure_collection_link
activate_toolchain
cd "$DGX_ROOT"
exec pytest -p no:cacheprovider -ra tests/lint tests/unit tests/integration tests/molecule "$@"
