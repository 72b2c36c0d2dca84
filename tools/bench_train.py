"""Cost of one training step on this machine: making a batch (the data worker) and the model's forward and
backward pass (the compute thread), with the share of padded LSTM steps.

    python -m tools.bench_train configs/digits.yaml [--set data.bucket=1] [--batches 24]

The two run on separate cores in training, so a step takes about the larger of the two.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from models.frontend import DEFAULT_FRONT_END, make_extractor
from models.model import AcousticModel
from tools.train import _configs, augment_config, batch_stream, ctc_loss, load_config


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--batches", type=int, default=24, help="measured after one warm-up pool")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(args.config, args.set)
    fcfg, tokenizer, mcfg = _configs(cfg)
    augment = augment_config(cfg)
    stream = batch_stream(cfg, make_extractor(cfg.get("frontend", DEFAULT_FRONT_END), fcfg, mcfg.stack), tokenizer, augment)
    bucket = stream.bucket
    for i in range(bucket):  # warm-up: clip cache, allocator
        stream.batch(i)
    model = AcousticModel(mcfg)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    make = compute = 0.0
    frames = padded = 0
    for i in range(bucket, bucket + args.batches):
        t = time.perf_counter()
        batch = stream.batch(i)
        make += time.perf_counter() - t
        frames += int(batch.frames.sum())
        padded += batch.features.shape[0] * batch.features.shape[1]
        t = time.perf_counter()
        loss = ctc_loss(model, batch, torch.device("cpu"), augment, amp=False)
        opt.zero_grad()
        loss.backward()
        opt.step()
        compute += time.perf_counter() - t
    n = args.batches
    print(json.dumps({
        "config": args.config, "overrides": args.set, "data_s_per_batch": round(make / n, 3),
        "compute_s_per_batch": round(compute / n, 3), "audio_s_per_batch": round(frames / n * fcfg.frame_seconds, 1),
        "padding": round(1 - frames / padded, 3), "compute_ms_per_audio_s": round(compute / (frames * fcfg.frame_seconds) * 1000, 2),
    }))


if __name__ == "__main__":
    main()
