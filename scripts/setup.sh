#!/usr/bin/env bash
# Installs what building and testing turbovsr needs on Debian 12: GStreamer 1.22 development
# files, gst-launch/gst-inspect and the plugins the demo, `turbovsr upscale` and the tests use
# (gstreamer1.0-libav: the H.264 decoder avdec_h264 and the AAC encoder). Idempotent.
# scripts/check-packages.sh (run by CI) fails when an element in use is in a package missing
# from this list.
set -euo pipefail
packages=(
  pkg-config
  libgstreamer1.0-0
  libgstreamer1.0-dev
  libgstreamer-plugins-base1.0-dev
  gstreamer1.0-tools
  gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good
  gstreamer1.0-plugins-ugly
  gstreamer1.0-libav
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "setup: cargo (Rust >= 1.89) is required" >&2; exit 1; }
