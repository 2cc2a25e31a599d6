#!/usr/bin/env bash
# Checks that scripts/setup.sh installs the Debian package of every GStreamer element this
# project uses, even on a machine where someone installed more packages by hand:
#   - the elements `turbovsr upscale` may pick by default (the names in its `debian_package`
#     table, src/cli/media.rs), whose package that table also names: it must be the real one;
#   - the elements actually created while the tests and the quick start ran (decoders that
#     decodebin chose included), read from GStreamer debug logs written with
#     GST_DEBUG=GST_ELEMENT_FACTORY:4 GST_DEBUG_FILE=DIR/gst-%p.log (.ci/run does this).
# For each element: `gst-inspect-1.0` gives its plugin file, `dpkg -S` the package that owns
# the file, and that package must be in setup.sh's `packages` list.
#
#   scripts/check-packages.sh [LOG_DIR...]
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t required < <(sed -n '/^packages=(/,/^)/p' scripts/setup.sh | sed '1d;$d' | tr -d ' ')
((${#required[@]})) || { echo "check-packages: no packages=( ... ) list in scripts/setup.sh" >&2; exit 1; }

# Element -> package the CLI's table claims ("" when the element only came from a log).
declare -A claimed=()
table=$(sed -n '/^fn debian_package/,/^}/p' src/cli/media.rs)
[ -n "$table" ] || { echo "check-packages: fn debian_package not found in src/cli/media.rs" >&2; exit 1; }
while IFS= read -r arm; do
  package=$(grep -o '"[a-z0-9.-]*"[^"]*$' <<<"$arm" | grep -o '"[^"]*"' | tr -d '"' || true)
  names=${arm%%=>*}
  for name in $(grep -o '"[a-z0-9_]*"' <<<"$names" | tr -d '"'); do
    claimed[$name]=$package
  done
done < <(tr '\n' ' ' <<<"$table" | sed 's/=> *{ */=> /g' | grep -o '"[a-z0-9_]*"[^=]*=> *"[a-z0-9.-]*"' )
((${#claimed[@]})) || { echo "check-packages: no elements read from debian_package" >&2; exit 1; }

declare -A used=()
for name in "${!claimed[@]}"; do used[$name]="src/cli/media.rs"; done
logs=0
for dir in "$@"; do
  for f in "$dir"/gst-*.log; do
    [ -e "$f" ] || continue
    logs=$((logs + 1))
    while IFS= read -r name; do
      [ -n "${used[$name]:-}" ] || used[$name]="created in $(basename "$f")"
    done < <(grep -ao 'creating element "[^"]*"' "$f" | cut -d'"' -f2 | sort -u)
  done
done
if (($#)) && ((logs == 0)); then
  echo "check-packages: no gst-*.log in $* (were the tests run with GST_DEBUG_FILE set?)" >&2
  exit 1
fi

# The package that owns a file; Debian 12 merged /usr, so dpkg may know either spelling.
owner() {
  local path=$1 alt
  case "$path" in
    /usr/lib/*) alt=${path#/usr} ;;
    /lib/*) alt=/usr$path ;;
    *) alt=$path ;;
  esac
  { dpkg -S "$path" 2>/dev/null || dpkg -S "$alt" 2>/dev/null; } | head -n 1 | cut -d: -f1
}

failures=0
checked=0
for name in $(printf '%s\n' "${!used[@]}" | sort); do
  # Bins and the pipeline are core objects; turbovsr is this project's own element.
  case "$name" in pipeline | bin | turbovsr) continue ;; esac
  info=$(gst-inspect-1.0 "$name" 2>/dev/null || true)
  file=$(awk '/^  Filename/ {print $2; exit}' <<<"$info")
  if [ -z "$file" ]; then
    echo "check-packages: element $name (${used[$name]}) is not installed: add its package to scripts/setup.sh" >&2
    failures=$((failures + 1))
    continue
  fi
  package=$(owner "$(readlink -f "$file")")
  [ -n "$package" ] || package=$(owner "$file")
  if [ -z "$package" ]; then
    echo "check-packages: element $name: no Debian package owns $file" >&2
    failures=$((failures + 1))
    continue
  fi
  checked=$((checked + 1))
  if ! printf '%s\n' "${required[@]}" | grep -qx "$package"; then
    echo "check-packages: element $name (${used[$name]}) is in $package, which scripts/setup.sh does not install" >&2
    failures=$((failures + 1))
  fi
  want=${claimed[$name]:-}
  if [ -n "$want" ] && [ "$want" != "$package" ]; then
    echo "check-packages: src/cli/media.rs names $want for $name, but $file is in $package" >&2
    failures=$((failures + 1))
  fi
done
if ((failures)); then
  echo "check-packages: $failures problem(s)" >&2
  exit 1
fi
echo "check-packages: $checked elements, each in a package scripts/setup.sh installs (${#required[@]} packages, $logs logs)"
