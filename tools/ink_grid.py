"""A picture for the model card: held-out writers' words drawn from their points, what the model read under each.

    python -m tools.ink_grid --model models/bundled/handwriting.pt --out models/bundled/handwriting.png

Words are drawn at random (seeded) from the held-out writers (tools.unipen), one writer at most twice, and read
through the model's own front end and decoding (tools.eval_ink.Reader). Under each: the truth, then what was read
(green when equal, red when not). matplotlib's Agg backend: no display is needed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from . import unipen
from .eval_ink import Reader


def pick_words(n: int, seed: int) -> list[tuple[np.ndarray, str, str]]:
    held = unipen.split_writers(seed)
    rng = np.random.default_rng(seed + 1)
    chosen, per_writer = [], {}
    for i in rng.permutation(unipen.indices("7", held, train=False)):
        points, label, writer = unipen.sample("7", int(i))
        if per_writer.get(writer, 0) < 2 and 3 <= len(label) <= 12:
            per_writer[writer] = per_writer.get(writer, 0) + 1
            chosen.append((points, label, writer))
        if len(chosen) == n:
            break
    return chosen


def draw(samples: list[tuple[np.ndarray, str, str]], reads: list[str], out: str | Path, cols: int = 6) -> Path:
    rows = -(-len(samples) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.4, rows * 1.9))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, (points, label, _), read in zip(np.ravel(axes), samples, reads):
        stroke = []
        for x, y, _, pen in points:
            if pen > 0.5:
                stroke.append((x, y))
            elif stroke:
                s = np.array(stroke)
                ax.plot(s[:, 0], s[:, 1], color="black", linewidth=1.0)
                stroke = []
        ax.set_aspect("equal")
        ax.invert_yaxis()  # y points down
        ok = read == label
        ax.text(0.5, -0.08, f"{label}\n{read or '(nothing)'}", transform=ax.transAxes, ha="center", va="top",
                fontsize=8, color="darkgreen" if ok else "firebrick")
    fig.tight_layout()
    fig.savefig(out, dpi=72)
    plt.close(fig)
    return Path(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="handwriting")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    samples = pick_words(args.n, args.seed)
    reader = Reader(args.model)
    reads = reader.read(reader.log_probs([s[0] for s in samples]))
    print(f"{sum(r == s[1] for r, s in zip(reads, samples))} of {len(samples)} read right; wrote "
          f"{draw(samples, reads, args.out)}")


if __name__ == "__main__":
    main()
