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
  local packages
  read -r -d "" -a packages <<<"$DGX_IMAGE_PACKAGES" || true  # every word of the list, across its lines
  printf '%s\n' "suite=$DGX_SUITE" "variant=minbase skip=cleanup/apt/lists" "${packages[@]}" \
    | sha256sum | cut -d' ' -f1
}

ensure_image() {
  # The molecule base image, built from Debian's packages (no registry is reachable). Its label
  # dgxspark.recipe-sha256 records the recipe it was built from; an image without it, or from another recipe,
  # is rebuilt under the same tag (containers already running keep the old one).
  local want have include packages
  want="$(image_recipe_sha256)"
  have="$(docker image inspect --format '{{ index .Config.Labels "dgxspark.recipe-sha256" }}' "$DGX_IMAGE" 2>/dev/null || true)"
  [ "$have" = "$want" ] && return 0
  apt_install mmdebstrap
  read -r -d "" -a packages <<<"$DGX_IMAGE_PACKAGES" || true  # every word of the list, across its lines
  include="$(printf '%s,' "${packages[@]}")"
  log "building $DGX_IMAGE with mmdebstrap ($DGX_SUITE; ${have:+recipe changed, }recipe $want)"
  mmdebstrap --variant=minbase --skip=cleanup/apt/lists \
    --include="${include%,}" \
    --format=tar "$DGX_SUITE" - 2>/dev/null \
    | docker import -c 'ENV container=docker' -c 'CMD ["/lib/systemd/systemd"]' \
        -c "LABEL dgxspark.recipe-sha256=$want" - "$DGX_IMAGE" >/dev/null
}

# ---------------------------------------------------------------- what scripts/test.sh needs beyond the toolchain

ensure_test_tools() {
  # The test-only tools (requirements-test.txt: galaxy-importer, antsibull-docs, antsibull-changelog, the
  # ansible-test units plugins) in $DGX_VENV, and shellcheck for ansible-test's shellcheck sanity test.
  local stamp="$DGX_VENV/.requirements-test.sha256" want
  command -v shellcheck >/dev/null || apt_install shellcheck
  want="$(cat "$DGX_ROOT/requirements.txt" "$DGX_ROOT/requirements-test.txt" | sha256sum | cut -d' ' -f1)"
  [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return 0
  log "installing the test tools into $DGX_VENV (requirements-test.txt)"
  "$DGX_VENV/bin/pip" install -q -r "$DGX_ROOT/requirements-test.txt"
  echo "$want" >"$stamp"
}

# NVIDIA's CUDA 13.0 toolkit as PyPI wheels (the same set as the toolkit of the CI machines):
# compiler, headers, runtime, NVVM (cicc, libdevice) and the small extras a full toolkit has.
DGX_CUDA_HOME="${DGX_CUDA_HOME:-/usr/local/cuda-13.0}"
DGX_CUDA_WHEELS=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85
  nvidia-cuda-runtime==13.0.96 nvidia-nvvm==13.0.88 nvidia-cuda-culibos==13.0.85 nvidia-cuda-cupti==13.0.85
  nvidia-cuda-cuxxfilt==13.0.85 nvidia-cuda-profiler-api==13.0.85 nvidia-nvtx==13.0.85)

cuda_toolkit_ok() {
  # cuda_toolkit_ok DIR : DIR/bin/nvcc runs and is release 13.0.
  [ -x "$1/bin/nvcc" ] && "$1/bin/nvcc" --version 2>/dev/null | grep -q "release 13\.0,"
}

ensure_cuda_toolkit() {
  # A CUDA 13.0 toolkit in $DGX_CUDA_HOME (/usr/local/cuda-13.0, with /usr/local/cuda pointing there when it
  # is free): the tests compile real CUDA code with it, and the molecule scenarios mount it read-only.
  # When it is missing it is assembled from NVIDIA's wheels on PyPI (about 110 MB of downloads, 320 MB on disk).
  local target tmp part
  if cuda_toolkit_ok "$DGX_CUDA_HOME"; then
    [ -e /usr/local/cuda ] || [ "$DGX_CUDA_HOME" != /usr/local/cuda-13.0 ] || as_root ln -s cuda-13.0 /usr/local/cuda
    return 0
  fi
  [ -e "$DGX_CUDA_HOME" ] && die "$DGX_CUDA_HOME exists but $DGX_CUDA_HOME/bin/nvcc is not a working nvcc 13.0; repair or move it (scripts/test.sh then assembles one from PyPI)"
  case "$(uname -m)" in
    x86_64) target=x86_64-linux ;;
    aarch64) target=sbsa-linux ;;
    *) die "no CUDA toolkit for $(uname -m): install CUDA 13.0 into $DGX_CUDA_HOME" ;;
  esac
  log "assembling a CUDA 13.0 toolkit in $DGX_CUDA_HOME from NVIDIA's PyPI wheels"
  tmp="$(mktemp -d)"
  "$DGX_VENV/bin/pip" install -q --disable-pip-version-check --no-deps --only-binary=:all: --target "$tmp/wheels" \
    "${DGX_CUDA_WHEELS[@]}" \
    || { rm -rf "$tmp"; die "could not install ${DGX_CUDA_WHEELS[*]} from PyPI; install CUDA 13.0 into $DGX_CUDA_HOME yourself (NVIDIA's cuda-toolkit-13-0 package puts it there)"; }
  # The wheels hold the toolkit tree under nvidia/cu13; nvcc.profile expects targets/<arch>/{include,lib}.
  part="$tmp/cuda"
  mv "$tmp/wheels/nvidia/cu13" "$part"
  mkdir -p "$part/dist-info" "$part/targets/$target"
  mv "$tmp/wheels/"*.dist-info "$part/dist-info/"
  ln -s ../../include "$part/targets/$target/include"
  ln -s ../../lib "$part/targets/$target/lib"
  ln -s lib "$part/lib64"
  ln -s libcudart.so.13 "$part/lib/libcudart.so"
  ln -s libnvvm.so.4 "$part/lib/libnvvm.so"
  ln -s libcupti.so.13 "$part/lib/libcupti.so"
  ln -s libnvtx3interop.so.1 "$part/lib/libnvtx3interop.so"
  printf '__global__ void k(int *p) { *p = 1; }\n' >"$tmp/k.cu"
  "$part/bin/nvcc" -gencode arch=compute_121,code=sm_121 -c -o "$tmp/k.o" "$tmp/k.cu" \
    || { rm -rf "$tmp"; die "the CUDA toolkit assembled from PyPI cannot compile for sm_121; install CUDA 13.0 into $DGX_CUDA_HOME yourself"; }
  as_root mkdir -p "$(dirname "$DGX_CUDA_HOME")"
  as_root mv "$part" "$DGX_CUDA_HOME"
  rm -rf "$tmp"
  [ -e /usr/local/cuda ] || [ "$DGX_CUDA_HOME" != /usr/local/cuda-13.0 ] || as_root ln -s cuda-13.0 /usr/local/cuda
  cuda_toolkit_ok "$DGX_CUDA_HOME" || die "$DGX_CUDA_HOME/bin/nvcc does not run after the install"
}

ensure_torch_cpu_wheel() {
  # The CPU torch wheel that the host_prep scenario installs (tests/wheelhouse.py, for the container's Python
  # 3.11 on this machine's architecture). It is not on PyPI. Where pip's own configuration provides it (a local
  # wheel folder in find-links, as on the CI machines) nothing is done; otherwise it is downloaded from PyTorch's
  # CPU index into .cache/torch-cpu, which is then added to PIP_FIND_LINKS for the tests.
  local dir="${DGX_TORCH_CPU_DIR:-$DGX_ROOT/.cache/torch-cpu}" index="${DGX_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
  local req tmp arch
  arch="$(uname -m)"
  req="$(cd "$DGX_ROOT/tests" && "$DGX_VENV/bin/python" -c 'import wheelhouse; print(next(r for r in wheelhouse.HOST_PREP_DEPS if r.startswith("torch==")))')"
  local target=(--disable-pip-version-check --only-binary=:all: --no-deps --implementation cp --python-version 3.11
    --abi cp311 --platform "manylinux_2_28_$arch" --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch")
  if ! ls "$dir"/torch-"${req#torch==}"-*.whl >/dev/null 2>&1; then
    tmp="$(mktemp -d)"
    if "$DGX_VENV/bin/pip" download -q "${target[@]}" -d "$tmp" "$req" >/dev/null 2>&1; then
      rm -rf "$tmp"
      return 0
    fi
    rm -rf "$tmp"
    log "downloading the wheel $req (not on PyPI) from $index into $dir"
    mkdir -p "$dir"
    "$DGX_VENV/bin/pip" download -q "${target[@]}" --timeout 20 --retries 1 --index-url "$index" -d "$dir" "$req" \
      >/dev/null 2>&1 \
      || die "the wheel $req (CPython 3.11, $arch) is missing: it is not on PyPI, pip's configuration names no folder that has it, and $index cannot be reached. Download it where that index can be reached (pip download --no-deps --python-version 3.11 --only-binary=:all: --index-url https://download.pytorch.org/whl/cpu $req) and put it into $dir"
  fi
  export PIP_FIND_LINKS="${PIP_FIND_LINKS:+$PIP_FIND_LINKS }$dir"
}
