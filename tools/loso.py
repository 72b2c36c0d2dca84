"""Leave-one-speaker-out evaluation over the five FSDD speakers.

    python -m tools.loso [--config configs/digits.yaml] [--speakers george nicolas]

Each fold trains the bundled model's recipe from scratch with one FSDD speaker removed from its data (the
other sources stay) and is scored on connected strings of that speaker, at 16 kHz and telephone band
(8 kHz). Folds resume where they stopped. Results: runs/loso/results.json and a markdown table.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

from stream.session import Recognizer
from tools.digits_data import ConnectedOptions, fsdd_clips, write_connected_set
from tools.evaluate import evaluate
from tools.train import load_config, train

SPEAKERS = ["george", "jackson", "lucas", "nicolas", "yweweler"]


def test_set(speaker: str, telephone: bool, n: int, root: Path) -> Path:
    """Connected strings of one speaker, written once and reused; seed = the speaker's place in SPEAKERS + 1, as
    `python -m tools.digits_data connected --speakers lucas --n 200 --seed 3 [--rate 8000 --telephone]`."""
    out = root / (f"{speaker}_tel8k" if telephone else speaker)
    manifest = out / "manifest.jsonl"
    if not manifest.exists():
        options = ConnectedOptions(telephone=telephone)
        seed = SPEAKERS.index(speaker) + 1
        write_connected_set(out, fsdd_clips(speakers=[speaker]), n, seed, rate=8000 if telephone else 16000, options=options)
    return manifest


def fold_config(base_cfg: dict, speaker: str) -> dict:
    """The recipe with `speaker` left out of every FSDD source."""
    cfg = copy.deepcopy(base_cfg)
    for source in cfg["data"]["train"]:
        if source["type"] == "fsdd_connected":
            source["speakers"] = [s for s in source.get("speakers", SPEAKERS) if s != speaker]
    return cfg


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/digits.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--speakers", nargs="+", default=SPEAKERS)
    p.add_argument("--n", type=int, default=200, help="test utterances per speaker")
    p.add_argument("--tests", default="data/test")
    p.add_argument("--out", default="runs/loso")
    args = p.parse_args(argv)
    out = Path(args.out)
    results_path = out / "results.json"
    base_cfg = load_config(args.config, args.set)
    for speaker in args.speakers:
        ckpt = out / f"{speaker}.pt"
        if not ckpt.exists():
            train(fold_config(base_cfg, speaker), ckpt, out / f"run_{speaker}", resume=True)
        torch.set_num_threads(1)
        recognizer = Recognizer.load(ckpt, device="cpu")
        result = {
            "wideband": evaluate(recognizer, test_set(speaker, False, args.n, Path(args.tests))),
            "telephone": evaluate(recognizer, test_set(speaker, True, args.n, Path(args.tests))),
        }
        # Re-read before writing: folds may run in parallel processes, one speaker each.
        results = json.loads(results_path.read_text()) if results_path.exists() else {}
        results[speaker] = result
        results_path.write_text(json.dumps(results, indent=1))
        print(json.dumps({"speaker": speaker, **{k: v["wer"] for k, v in result.items()}}), flush=True)
    print(table(json.loads(results_path.read_text())))


def table(results: dict) -> str:
    rows = ["| held-out speaker | WER 16 kHz | SER 16 kHz | WER 8 kHz phone band | SER 8 kHz |", "|---|---|---|---|---|"]
    for speaker, r in results.items():
        w, t = r["wideband"], r["telephone"]
        rows.append(f"| {speaker} | {w['wer']:.2%} | {w['ser']:.1%} | {t['wer']:.2%} | {t['ser']:.1%} |")
    if results:
        mean = lambda key, kind: sum(r[kind][key] for r in results.values()) / len(results)
        rows.append(
            f"| **mean** | **{mean('wer', 'wideband'):.2%}** | {mean('ser', 'wideband'):.1%} | "
            f"**{mean('wer', 'telephone'):.2%}** | {mean('ser', 'telephone'):.1%} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
