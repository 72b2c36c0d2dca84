"""Held-out validation by speaker group: WER and SER per group, at 16 kHz and on the 8 kHz telephone band.

    python -m tools.validate --fold-config configs/digits_real.yaml --fsdd-speaker jackson > runs/val.yaml
    python -m tools.train runs/val.yaml --out runs/val/val.pt --run-dir runs/val    # the validation model
    python -m tools.validate --model runs/val/val.pt [--sets data/val] [--out runs/val/scores.json]
    python -m tools.validate --peer pocketsphinx --wip 0.01 [--sets data/val]

The scoring sets: `python -m tools.speechocean --out data/so762` (then `ln -s ../so762 data/val/so762`) and
`python -m tools.digits_data connected --speakers jackson --n 200 --seed 2 --out data/val/fsdd_heldout` (and
`--rate 8000 --telephone --out data/val/fsdd_heldout_tel8k`).

`--sets` holds the scoring manifests `tools/speechocean.py` and `tools/digits_data.py` write (see
`python -m tools.validate --help` for the names): speechocean762 speakers left out of training, scored on their
digit-only utterances, each row labelled with `age_group` and `gender`; and connected strings of the FSDD speaker
left out. Every group is scored on the same audio by either system; rows go to the groups they belong to, so a
row is counted in its age group and in its gender group. The last line printed is a JSON object; a markdown
table goes before it.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from tools.data import read_manifest
from tools.scoring import score

# band -> (manifest folder under --sets, group of every row or None: from the row's labels)
SETS = {
    "16k": [("so762/heldout_digits", None), ("fsdd_heldout", "fsdd")],
    "8k": [("so762/heldout_digits_tel8k", None), ("fsdd_heldout_tel8k", "fsdd")],
}
GROUP_ORDER = ["adult", "child", "female", "male", "speechocean", "fsdd"]


def fold_config(cfg: dict, fsdd_speaker: str) -> dict:
    """The recipe without the held-out voices: speechocean's `all*.jsonl` become `train*.jsonl` (tools/speechocean.py),
    in the data sources and in the babble the augmentation makes of training speech (tools/rooms.py), and
    `fsdd_speaker` leaves every FSDD source (which must name its speakers)."""
    cfg = copy.deepcopy(cfg)

    def train_only(path: str) -> str:
        name = Path(path).name
        return str(Path(path).with_name(name.replace("all", "train"))) if name in ("all.jsonl", "all_digits.jsonl") else path

    for source in cfg["data"]["train"]:
        if source["type"] == "fsdd_connected":
            source["speakers"] = [s for s in source["speakers"] if s != fsdd_speaker]
        elif source["type"] == "manifest":
            source["path"] = train_only(source["path"])
    if cfg.get("augment") and cfg["augment"].get("babble_manifests"):
        cfg["augment"]["babble_manifests"] = [train_only(p) for p in cfg["augment"]["babble_manifests"]]
    return cfg


def groups_of(row: dict, fixed: str | None) -> list[str]:
    if fixed is not None:
        return [fixed]
    return [row["age_group"], row["gender"], "speechocean"]


def score_groups(rows: list[tuple[list[str], str, str]]) -> dict[str, dict]:
    """{group: score} of (groups, ref, hyp) rows, in GROUP_ORDER."""
    by_group: dict[str, list[tuple[str, str]]] = {}
    for groups, ref, hyp in rows:
        for g in groups:
            by_group.setdefault(g, []).append((ref, hyp))
    return {g: score(by_group[g]) for g in GROUP_ORDER if g in by_group}


def model_transcriber(model: str, chunk_ms: int) -> Callable[[str], str]:
    from stream.session import Recognizer
    from stream.transcribe import transcribe_file

    recognizer = Recognizer.load(model, device="cpu")
    return lambda path: transcribe_file(recognizer, path, chunk_ms=chunk_ms).text


def peer_transcriber(wip: float | None) -> Callable[[str], str]:
    from tools.peer_pocketsphinx import PeerOptions, make_decoder, read_pcm16, recognize

    with tempfile.TemporaryDirectory(prefix="ps_") as tmp:
        decoder = make_decoder(PeerOptions(wip=wip), Path(tmp))
    return lambda path: recognize(decoder, read_pcm16(path)[0])


def validate(transcribe: Callable[[str], str], sets: Path) -> dict:
    """{band: {"groups": {group: score}, "rtf", "audio_seconds"}, "hyps": [...]} over SETS."""
    result, hyps = {}, []
    for band, manifests in SETS.items():
        rows, audio_s, wall = [], 0.0, 0.0
        for folder, fixed in manifests:
            for row in read_manifest(sets / folder / "manifest.jsonl"):
                t0 = time.perf_counter()
                hyp = transcribe(row["audio"])
                wall += time.perf_counter() - t0
                audio_s += row["duration"]
                rows.append((groups_of(row, fixed), row["text"], hyp))
                hyps.append({"band": band, "audio": row["audio"], "groups": rows[-1][0], "ref": row["text"], "hyp": hyp})
        result[band] = {"groups": score_groups(rows), "audio_seconds": round(audio_s, 1), "rtf": round(wall / audio_s, 4)}
    return {**result, "hyps": hyps}


def table(result: dict, name: str) -> str:
    lines = [f"| {name}: group | utterances | words | WER 16 kHz | SER 16 kHz | WER 8 kHz phone | SER 8 kHz |",
             "|---|---|---|---|---|---|---|"]
    wide, narrow = result["16k"]["groups"], result["8k"]["groups"]
    for g in wide:
        w, n = wide[g], narrow[g]
        lines.append(f"| {g} | {w['utterances']} | {w['ref_words']} | {w['wer']:.2%} | {w['ser']:.1%} | "
                     f"{n['wer']:.2%} | {n['ser']:.1%} |")
    lines.append(f"| RTF (1 thread) | | | {result['16k']['rtf']:.4f} | | {result['8k']['rtf']:.4f} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="digits")
    p.add_argument("--peer", choices=["pocketsphinx"], help="score the peer system instead of a model")
    p.add_argument("--wip", type=float, help="the peer's word insertion penalty")
    p.add_argument("--sets", type=Path, default=Path("data/val"))
    p.add_argument("--chunk-ms", type=int, default=160)
    p.add_argument("--out", type=Path, help="scores and per-utterance hypotheses as JSON")
    p.add_argument("--fold-config", metavar="CONFIG", help="print CONFIG without the held-out voices (YAML) and exit")
    p.add_argument("--fsdd-speaker", default="jackson", help="the FSDD speaker held out (with --fold-config)")
    args = p.parse_args(argv)
    if args.fold_config:
        from tools.train import load_config

        yaml.safe_dump(fold_config(load_config(args.fold_config), args.fsdd_speaker), sys.stdout, sort_keys=False)
        return
    torch.set_num_threads(1)
    name = f"pocketsphinx (wip {args.wip})" if args.peer else args.model
    transcribe = peer_transcriber(args.wip) if args.peer else model_transcriber(args.model, args.chunk_ms)
    result = validate(transcribe, args.sets)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"system": name, **result}, indent=1))
    print(table(result, name))
    print(json.dumps({"system": name, **{b: {"rtf": result[b]["rtf"], **{g: {k: round(v, 4) if isinstance(v, float)
          else v for k, v in s.items() if k in ("utterances", "wer", "ser")} for g, s in result[b]["groups"].items()}}
          for b in SETS}}))


if __name__ == "__main__":
    main()
