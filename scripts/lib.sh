#!/usr/bin/env bash
# Shared set-up steps for scripts/provision.sh and scripts/test.sh. Sourced, not run.
# Each step checks first and does nothing when its result is already there.

DGX_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DGX_VENV="${DGX_VENV:-$DGX_ROOT/.venv}"
DGX_IMAGE="${DGX_IMAGE:-local/dgxspark-debian:bookworm}"
DGX_SUITE="${DGX_SUITE:-bookworm}"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  # apt_install PKG... : install the Debian/Ubuntu packages that are missing.
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_toolchain() {
  # The controller's Python toolchain (requirements.txt) in $DGX_VENV, rebuilt when the pins change.
  local py="${DGX_PYTHON:-python3}" stamp want
  command -v "$py" >/dev/null || die "python3 not found; install Python 3.11 or newer"
  "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$py is $("$py" -V 2>&1); Python 3.11 or newer is needed"
  want="$(sha256sum "$DGX_ROOT/requirements.txt" | cut -d' ' -f1)"
  stamp="$DGX_VENV/.requirements.sha256"
  if [ -x "$DGX_VENV/bin/ansible-playbook" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  if ! "$py" -m venv --help >/dev/null 2>&1 || ! "$py" -c 'import ensurepip' >/dev/null 2>&1; then
    apt_install python3-venv
  fi
  log "creating the toolchain in $DGX_VENV (requirements.txt)"
  "$py" -m venv "$DGX_VENV"
  "$DGX_VENV/bin/pip" install -q --upgrade pip
  "$DGX_VENV/bin/pip" install -q -r "$DGX_ROOT/requirements.txt"
  echo "$want" >"$stamp"
}

ensure_collection_link() {
  # Make this checkout resolvable as the collection dgxspark.vllm (ansible.cfg's collections_path).
  local dir="$DGX_ROOT/.cache/collections/ansible_collections/dgxspark"
  mkdir -p "$dir"
  [ "$(readlink "$dir/vllm" 2>/dev/null)" = "../../../.." ] || ln -sfn ../../../.. "$dir/vllm"
}

activate_toolchain() {
  export PATH="$DGX_VENV/bin:$PATH"
  export ANSIBLE_CONFIG="$DGX_ROOT/ansible.cfg"
  export NO_COLOR=1 PY_COLORS=0 ANSIBLE_FORCE_COLOR=0 ANSIBLE_NOCOLOR=1
}

ensure_docker() {
  # A running Docker engine. Debian's docker.io; dockerd is started by hand where there is no systemd.
  if ! command -v dockerd >/dev/null; then
    apt_install docker.io
  fi
  if docker info >/dev/null 2>&1; then return 0; fi
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    as_root systemctl start docker || true
  fi
  if ! docker info >/dev/null 2>&1; then
    log "starting dockerd"
    as_root setsid dockerd >/var/log/dgxspark-dockerd.log 2>&1 </dev/null &
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  fi
  docker info >/dev/null 2>&1 || die "the Docker engine did not start; see /var/log/dgxspark-dockerd.log"
}

# The Debian packages of the molecule base image, one word each. The first line is what every scenario needs
# (systemd as PID 1, Python for Ansible, apt for the roles); libnuma1 is what vLLM's CPU build links against
# (the serving scenarios run the real `vllm serve`).
DGX_IMAGE_PACKAGES="apt python3 python3-apt sudo ca-certificates systemd systemd-sysv dbus procps iproute2
libnuma1"

image_recipe_sha256() {
  # The image's recipe (suite, mmdebstrap options, package list) as a digest: a change of any rebuilds the image.
  printf '%s\n' "suite=$DGX_SUITE" "variant=minbase skip=cleanup/apt/lists" $DGX_IMAGE_PACKAGES \
    | sha256sum | cut -d' ' -f1
}

ensure_image() {
  # The molecule base image, built from Debian's packages (no registry is reachable). Its label
  # dgxspark.recipe-sha256 records the recipe it was built from; an image without it, or from another recipe,
  # is rebuilt under the same tag (containers already running keep the old one).
  local want have include
  want="$(image_recipe_sha256)"
  have="$(docker image inspect --format '{{ index .Config.Labels "dgxspark.recipe-sha256" }}' "$DGX_IMAGE" 2>/dev/null || true)"
  [ "$have" = "$want" ] && return 0
  apt_install mmdebstrap
  include="$(printf '%s,' $DGX_IMAGE_PACKAGES)"
  log "building $DGX_IMAGE with mmdebstrap ($DGX_SUITE; ${have:+recipe changed, }recipe $want)"
  mmdebstrap --variant=minbase --skip=cleanup/apt/lists \
    --include="${include%,}" \
    --format=tar "$DGX_SUITE" - 2>/dev/null \
    | docker import -c 'ENV container=docker' -c 'CMD ["/lib/systemd/systemd"]' \
        -c "LABEL dgxspark.recipe-sha256=$want" - "$DGX_IMAGE" >/dev/null
}
