#!/usr/bin/env bash
# Installs the Ray farm's environment (farm/requirements.txt: ray, tqdm, pytest, ruff; pinned) into
# a virtual environment outside the clone, once: TURBOVSR_FARM_VENV (default
# /var/cache/turbovsr-farm/venv). Reinstalls when the requirements change (into the same
# environment while its python runs, else a new one); works with the folder absent. Prints the
# environment's python.
#
#   scripts/farm-env.sh            # then: (cd farm && "$(../scripts/farm-env.sh)" -m pytest)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TURBOVSR_FARM_VENV:-/var/cache/turbovsr-farm/venv}"
stamp="$venv/.turbovsr-requirements"
want=$(sha256sum farm/requirements.txt | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  if ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
    python=$(command -v python3) || { echo "farm-env: python3 (>= 3.10) is required" >&2; exit 1; }
    if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
      # Debian's python3 keeps venv/ensurepip in their own package.
      sudo_cmd=()
      [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
      "${sudo_cmd[@]}" apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq python3-venv >&2
    fi
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
  fi
  echo "farm-env: installing farm/requirements.txt into $venv" >&2
  rm -f "$stamp"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r farm/requirements.txt >&2
  echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
