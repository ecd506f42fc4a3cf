#!/usr/bin/env bash
# Provision: create the controller toolchain if missing, then run site.yml.
#   scripts/provision.sh                     # this machine (inventory/hosts.yml)
#   scripts/provision.sh -i fleet.yml        # a fleet; any ansible-playbook option passes through
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
ensure_toolchain
ensure_collection_link
activate_toolchain
cd "$DGX_ROOT"
exec ansible-playbook site.yml "$@"
