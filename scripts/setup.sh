#!/usr/bin/env bash
# Idempotent set-up of a worldenv checkout: system libraries, a virtual
# environment in .venv, the CPU build of PyTorch, and the package with its
# native extension and extras. Safe to run again; it only does what changed.
#
#   WORLDENV_TORCH   torch requirement to install first (default torch==2.13.0, the CPU wheel here;
#                    on a CUDA machine pass e.g. "torch" to take the CUDA build)
#   WORLDENV_EXTRAS  extras to install (default dev,agents)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TORCH_REQ="${WORLDENV_TORCH:-torch==2.13.0}"
EXTRAS="${WORLDENV_EXTRAS:-dev,agents}"
APT_PACKAGES=(libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri)

log() { printf '[setup] %s\n' "$*" >&2; }

# --- system packages: headless OpenGL (Mesa EGL) for the ground-truth renderer
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then
    log "installing ${missing[*]} with sudo"
    sudo apt-get update -qq >/dev/null
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "warning: cannot install ${missing[*]} (not root, no apt-get); the ground-truth renderer needs EGL"
  fi
fi

# --- virtual environment
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
PY=.venv/bin/python
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)

# --- torch first, pinned, so nothing pulls the multi-GB CUDA build on a CPU machine
torch_name="${TORCH_REQ%%[=<>!~ ]*}"
torch_pin="${TORCH_REQ#*==}"
have_torch=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])" 2>/dev/null || true)
if [ -z "$have_torch" ] || { [ "$torch_pin" != "$TORCH_REQ" ] && [ "$have_torch" != "$torch_pin" ]; }; then
  log "installing $TORCH_REQ"
  "${PIP[@]}" install "$TORCH_REQ"
fi
[ "$torch_name" = torch ] || log "warning: WORLDENV_TORCH=$TORCH_REQ does not name torch"

# --- the package: reinstall only when the build inputs, the requirements or the
# set of package files changed (the editable install maps the files it saw)
stamp_src=$( { cat pyproject.toml CMakeLists.txt; find csrc -type f | LC_ALL=C sort | xargs cat;
               find worldenv -name '*.py' | LC_ALL=C sort; echo "$EXTRAS $TORCH_REQ"; } | sha256sum | cut -d' ' -f1)
if [ ! -f .setup-stamp ] || [ "$(cat .setup-stamp)" != "$stamp_src" ] || ! "$PY" -c "import worldenv._native" 2>/dev/null; then
  log "installing worldenv[$EXTRAS] (builds the native extension)"
  "${PIP[@]}" install "scikit-build-core>=0.10" "pybind11>=2.12" "cmake>=3.18" ninja
  "${PIP[@]}" install --no-build-isolation -e ".[$EXTRAS]"
  echo "$stamp_src" > .setup-stamp
fi
