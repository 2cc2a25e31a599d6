#!/usr/bin/env bash
# Installs the PyTorch trainer's environment (training/requirements.txt: torch, diffusers,
# accelerate, safetensors, pytest; pinned) into a virtual environment outside the clone, once:
# TURBOVSR_TRAIN_VENV (default /var/cache/turbovsr-train/venv). Reinstalls when the requirements
# change; works with the folder absent. Prints the environment's python.
#
#   scripts/training-env.sh            # then: "$(scripts/training-env.sh)" -m pytest training/tests
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TURBOVSR_TRAIN_VENV:-/var/cache/turbovsr-train/venv}"
stamp="$venv/.turbovsr-requirements"
want=$(sha256sum training/requirements.txt | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python=$(command -v python3) || { echo "training-env: python3 (>= 3.10) is required" >&2; exit 1; }
  if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
    # Debian's python3 keeps venv/ensurepip in their own package.
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq python3-venv >&2
  fi
  echo "training-env: installing training/requirements.txt into $venv" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r training/requirements.txt >&2
  echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
