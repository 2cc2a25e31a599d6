#!/usr/bin/env bash
# Install the training photos of issue 11: the wallpaper packages of Debian 12, unpacked (no root
# install), deduplicated, and split into training and held-out sets BY PICTURE (never mixed).
#
#   scripts/data/fetch-wallpapers.sh [ROOT]        (default ROOT: data/wallpapers under the repo)
#
# Writes ROOT/pkgs/<pkg>/ (the unpacked packages), ROOT/images.txt (every kept image, relative to
# ROOT), ROOT/train.txt and ROOT/heldout.txt (the split), ROOT/licenses/<pkg>.copyright. Re-running
# reuses the downloaded .deb files and unpacked folders. docs/DATASET.md summarises the licences.
#
# What is kept (docs/DATASET.md gives the reasons):
# - raster images (jpg, jpeg, png, webp; gnome-backgrounds 43 ships only WebP) whose short side is
#   at least 1000 px; svg, xml, icons, logos and previews are skipped;
# - one image per picture: KDE wallpapers ship the same picture at several resolutions
#   (contents/images/<W>x<H>.ext) and mate the same one as Name.jpg / Name_<W>x<H>.jpg, so only the
#   largest of a group is kept; desktop-base ships each theme's artwork as grub, login and plymouth
#   backgrounds, so only its largest background per theme is kept.
# - the split hashes a picture KEY, not the file: the light and dark variants of one wallpaper
#   (KDE images/ and images_dark/, gnome -l/-d) share a key so they land in the same set.
#   About 15 % of the keys (sha256 of the key below 0.15) are held out, at least 6.
set -euo pipefail

PKGS=(plasma-workspace-wallpapers gnome-backgrounds mate-backgrounds lomiri-wallpapers desktop-base)
MIN_SHORT_SIDE=1000
HELDOUT_FRACTION=0.15
MIN_HELDOUT=6

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ROOT="${1:-$repo_root/data/wallpapers}"
mkdir -p "$ROOT/debs" "$ROOT/pkgs" "$ROOT/licenses"
ROOT="$(cd "$ROOT" && pwd)"

for tool in apt-get apt-cache dpkg-deb python3; do
    command -v "$tool" >/dev/null || { echo "fetch-wallpapers: '$tool' not found (Debian/Ubuntu host needed)" >&2; exit 1; }
done

present=()
for pkg in "${PKGS[@]}"; do
    if [ -d "$ROOT/pkgs/$pkg/usr" ]; then
        present+=("$pkg")
        continue
    fi
    deb=$(ls "$ROOT/debs/${pkg}"_*.deb 2>/dev/null | head -n1 || true)
    if [ -z "$deb" ]; then
        if ! apt-cache show "$pkg" >/dev/null 2>&1; then
            echo "fetch-wallpapers: package $pkg is not known to apt here; skipped" >&2
            continue
        fi
        # apt-get download needs no root; its _apt sandbox warning about the folder is harmless
        if ! (cd "$ROOT/debs" && apt-get download "$pkg" >/dev/null 2>&1); then
            echo "fetch-wallpapers: apt-get download $pkg failed; running apt-get update and retrying" >&2
            apt-get update >/dev/null 2>&1 || true
            if ! (cd "$ROOT/debs" && apt-get download "$pkg"); then
                echo "fetch-wallpapers: could not download $pkg; skipped" >&2
                continue
            fi
        fi
        deb=$(ls "$ROOT/debs/${pkg}"_*.deb | head -n1)
    fi
    rm -rf "$ROOT/pkgs/$pkg.partial"
    mkdir -p "$ROOT/pkgs/$pkg.partial"
    dpkg-deb -x "$deb" "$ROOT/pkgs/$pkg.partial"
    mv "$ROOT/pkgs/$pkg.partial" "$ROOT/pkgs/$pkg"
    present+=("$pkg")
done

for pkg in "${present[@]}"; do
    src="$ROOT/pkgs/$pkg/usr/share/doc/$pkg/copyright"
    if [ -f "$src" ]; then
        cp "$src" "$ROOT/licenses/$pkg.copyright"
    else
        echo "fetch-wallpapers: $pkg has no copyright file at usr/share/doc/$pkg/copyright" >&2
    fi
done

python3 - "$ROOT" "$MIN_SHORT_SIDE" "$HELDOUT_FRACTION" "$MIN_HELDOUT" "${present[@]}" <<'PY'
import hashlib, os, re, struct, sys

root, min_short, frac, min_held = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
pkgs = sys.argv[5:]

def dims(path):
    """(width, height) from the file header (PNG IHDR, WebP VP8/VP8L/VP8X, JPEG SOFn), or None."""
    with open(path, 'rb') as f:
        h = f.read(64)
        if h[:8] == b'\x89PNG\r\n\x1a\n':
            return struct.unpack('>II', h[16:24])
        if h[:4] == b'RIFF' and h[8:12] == b'WEBP':
            c = h[12:16]
            if c == b'VP8 ':
                w, hh = struct.unpack('<HH', h[26:30])
                return w & 0x3fff, hh & 0x3fff
            if c == b'VP8L':
                v = int.from_bytes(h[21:25], 'little')
                return (v & 0x3fff) + 1, ((v >> 14) & 0x3fff) + 1
            if c == b'VP8X':
                return int.from_bytes(h[24:27], 'little') + 1, int.from_bytes(h[27:30], 'little') + 1
            return None
        if h[:2] != b'\xff\xd8':
            return None
        f.seek(2)
        while True:
            m = f.read(2)
            if len(m) < 2 or m[0] != 0xff:
                return None
            while m[1] == 0xff:
                m = m[:1] + f.read(1)
            if m[1] in (0xd8, 0x01) or 0xd0 <= m[1] <= 0xd7:
                continue
            ln = struct.unpack('>H', f.read(2))[0]
            if m[1] in (0xc0, 0xc1, 0xc2, 0xc3, 0xc5, 0xc6, 0xc7, 0xc9, 0xca, 0xcb, 0xcd, 0xce, 0xcf):
                d = f.read(5)
                hh, w = struct.unpack('>HH', d[1:5])
                return w, hh
            f.seek(ln - 2, 1)

KDE = re.compile(r'^pkgs/[^/]+/usr/share/wallpapers/([^/]+)/contents/(images(?:_dark)?)/\d+x\d+\.\w+$')
DB_THEME = re.compile(r'^pkgs/desktop-base/usr/share/(?:desktop-base/([^/]+)-theme/grub/grub-16x9|plymouth/themes/([^/]+)/(?:plymouth_)?background[^/]*)\.png$')
SIZE_SUFFIX = re.compile(r'_\d+x\d+$')
LIGHT_DARK = re.compile(r'-[ld]$')

def group_and_key(rel, pkg):
    """(dedup group, split key) of an image, or None when it is not a training picture."""
    m = KDE.match(rel)
    if m:
        return f'{pkg}/{m.group(1)}/{m.group(2)}', f'{pkg}/{m.group(1)}'
    if '/wallpapers/' in rel and '/contents/' in rel:
        return None  # KDE screenshot.* previews
    if pkg == 'desktop-base':
        m = DB_THEME.match(rel)
        if not m:
            return None  # logos, icons, plymouth sprites, previews
        theme = m.group(1) or m.group(2)
        return f'{pkg}/{theme}', f'{pkg}/{theme}'
    stem, _ = os.path.splitext(rel)
    stem = SIZE_SUFFIX.sub('', stem)
    return stem, LIGHT_DARK.sub('', stem)

best = {}  # group -> (pixels, rel, key, pkg)
skipped_small = 0
for pkg in pkgs:
    base = os.path.join(root, 'pkgs', pkg)
    for dirpath, _, files in os.walk(base):
        for name in files:
            if os.path.splitext(name)[1].lower() not in ('.jpg', '.jpeg', '.png', '.webp'):
                continue
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                continue  # the same file under another name
            rel = os.path.relpath(full, root)
            gk = group_and_key(rel, pkg)
            if gk is None:
                continue
            d = dims(full)
            if d is None:
                print(f'fetch-wallpapers: cannot read the size of {rel}; skipped', file=sys.stderr)
                continue
            if min(d) < min_short:
                skipped_small += 1
                continue
            group, key = gk
            cand = (d[0] * d[1], rel, key, pkg)
            if group not in best or cand[:2] > best[group][:2]:
                best[group] = cand

images = sorted(best.values(), key=lambda c: c[1])
def h(key):
    return int(hashlib.sha256(key.encode()).hexdigest()[:16], 16) / 2.0**64
keys = sorted({c[2] for c in images}, key=lambda k: (h(k), k))
held = {k for k in keys if h(k) < frac}
for k in keys:  # the lowest hashes first, so the rule stays deterministic
    if len(held) >= min_held:
        break
    held.add(k)
if len(held) >= len(keys):
    sys.exit('fetch-wallpapers: too few pictures to hold any out for training')

def write(name, rows):
    with open(os.path.join(root, name), 'w') as f:
        f.writelines(r + '\n' for r in rows)
write('images.txt', [c[1] for c in images])
write('train.txt', [c[1] for c in images if c[2] not in held])
write('heldout.txt', [c[1] for c in images if c[2] in held])
print(f'{len(images)} images ({skipped_small} skipped as smaller than {min_short} px on the short side)')
print(f'{"package":32} {"images":>6} {"train":>6} {"heldout":>7}')
for pkg in pkgs:
    rows = [c for c in images if c[3] == pkg]
    nh = sum(1 for c in rows if c[2] in held)
    print(f'{pkg:32} {len(rows):6} {len(rows) - nh:6} {nh:7}')
nh = sum(1 for c in images if c[2] in held)
print(f'{"total":32} {len(images):6} {len(images) - nh:6} {nh:7}')
PY
echo "fetch-wallpapers: lists in $ROOT (images.txt, train.txt, heldout.txt)"
