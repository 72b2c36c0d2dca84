"""The peer: Tesseract OCR (Debian's tesseract-ocr, English data) on the same held-out ink rendered to images.

    python -m tools.peer_tesseract --words 300 --out runs/handwriting/tesseract.json

Each held-out word (tools.unipen's split, the same seeded draw as tools.eval_ink --words) is drawn as black
strokes 3 px wide on white, 64 px high plus margins (PIL), and read by the `tesseract` binary as one word
(`--psm 8`); isolated characters as one character (`--psm 10`). Time is the binary's wall time per image (its
start included: that is how it is used per field). Invariant: the images hold only the pen-down strokes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from . import unipen
from .eval_ink import _cer

HEIGHT, MARGIN, WIDTH = 64, 16, 3


def render(points: np.ndarray, path: Path) -> Path:
    down = points[points[:, 3] > 0.5]
    lo, hi = down[:, :2].min(0), down[:, :2].max(0)
    scale = HEIGHT / max(hi[1] - lo[1], (hi[0] - lo[0]) / 8, 1e-6)
    w, h = int((hi[0] - lo[0]) * scale) + 2 * MARGIN, int((hi[1] - lo[1]) * scale) + 2 * MARGIN
    img = Image.new("L", (max(w, 2 * MARGIN + 1), max(h, 2 * MARGIN + 1)), 255)
    draw = ImageDraw.Draw(img)
    stroke: list[tuple[float, float]] = []
    for x, y, _, pen in points:
        if pen > 0.5:
            stroke.append(((x - lo[0]) * scale + MARGIN, (y - lo[1]) * scale + MARGIN))
        elif stroke:
            draw.line(stroke, fill=0, width=WIDTH, joint="curve") if len(stroke) > 1 else draw.ellipse(
                [stroke[0][0] - 1, stroke[0][1] - 1, stroke[0][0] + 1, stroke[0][1] + 1], fill=0)
            stroke = []
    img.save(path)
    return path


def tesseract(path: Path, psm: int) -> tuple[str, float]:
    t0 = time.perf_counter()
    out = subprocess.run(["tesseract", str(path), "stdout", "--psm", str(psm), "-l", "eng"], check=False,
                         capture_output=True,
                         text=True, timeout=60).stdout
    return " ".join(out.split()), time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--words", type=int, default=300)
    p.add_argument("--chars", type=int, default=100, help="isolated characters per category")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out")
    args = p.parse_args(argv)
    held = unipen.split_writers(args.seed)
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        idx = unipen.indices("7", held, train=False)
        idx = np.sort(np.random.default_rng(args.seed).permutation(idx)[: args.words])
        refs, hyps, times = [], [], []
        for i in idx:
            points, label, _ = unipen.sample("7", int(i))
            text, seconds = tesseract(render(points, Path(tmp) / "w.png"), 8)
            refs.append(label), hyps.append(text), times.append(seconds)
        report["words"] = {"n": len(refs), "cer": _cer(refs, hyps), "cer_folded": _cer(refs, hyps, fold=True),
                           "wer": float(np.mean([r != h for r, h in zip(refs, hyps)])),
                           "seconds_per_word": float(np.mean(times)), "examples": list(zip(refs, hyps))[:20]}
        print({k: v for k, v in report["words"].items() if k != "examples"})
        for cat in ("1a", "1b", "1c"):
            idx = unipen.indices(cat, held, train=False)
            idx = np.sort(np.random.default_rng(args.seed).permutation(idx)[: args.chars])
            ok = []
            for i in idx:
                points, label, _ = unipen.sample(cat, int(i))
                text, _ = tesseract(render(points, Path(tmp) / "c.png"), 10)
                ok.append(text == label)
            report[cat] = {"n": len(ok), "accuracy": float(np.mean(ok))}
            print(cat, report[cat])
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
