"""The README's figure: one region of a picture as bicubic, a model's output and the ground
truth, side by side, magnified 2x with nearest-neighbour so that pixels stay pixels.

    python scripts/bench/figure.py SIDE_BY_SIDE.png HR.png OUT.png [--box X0 Y0 X1 Y1]

SIDE_BY_SIDE.png is what `turbovsr upscale --side-by-side` writes (the input bicubic-upscaled
on the left, the output on the right); HR.png the ground truth of the same size as each half.
"""

import argparse

from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("side_by_side")
    ap.add_argument("hr")
    ap.add_argument("out")
    ap.add_argument("--box", type=int, nargs=4, default=[150, 60, 350, 260])
    ap.add_argument("--zoom", type=int, default=2)
    ap.add_argument("--gap", type=int, default=4)
    args = ap.parse_args()
    sbs = Image.open(args.side_by_side).convert("RGB")
    gt = Image.open(args.hr).convert("RGB")
    w, h = gt.size
    if sbs.size[1] != h or sbs.size[0] < 2 * w:
        raise SystemExit(
            f"{args.side_by_side} is {sbs.size[0]}x{sbs.size[1]}: not two {w}x{h} halves "
            f"beside each other (the ground truth {args.hr} is {w}x{h})"
        )
    x0, y0, x1, y1 = args.box
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise SystemExit(f"--box {x0} {y0} {x1} {y1} is not inside the {w}x{h} picture")
    halves = [sbs.crop((0, 0, w, h)), sbs.crop((sbs.size[0] - w, 0, sbs.size[0], h)), gt]
    size = ((x1 - x0) * args.zoom, (y1 - y0) * args.zoom)
    canvas = Image.new("RGB", (3 * size[0] + 2 * args.gap, size[1]), "white")
    for i, im in enumerate(halves):
        tile = im.crop((x0, y0, x1, y1)).resize(size, Image.NEAREST)
        canvas.paste(tile, (i * (size[0] + args.gap), 0))
    canvas.save(args.out, optimize=True)
    print(f"figure: wrote {args.out} ({canvas.size[0]}x{canvas.size[1]})")


if __name__ == "__main__":
    main()
