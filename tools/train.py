"""Train an LSTM-CTC acoustic model from a YAML config and write an rnnstream checkpoint.

    python -m tools.train configs/digits.yaml --out models/bundled/digits.pt [--resume] [--set train.steps=200]

Runs unchanged on CPU or GPU (bf16 autocast on CUDA). A training state is saved to the run folder every
`checkpoint_every` steps; `--resume` continues from it with the same batches the first run would have seen.
Resumed with another `train.steps`, the rest of the one-cycle schedule is re-planned to the new total (the learning
rate moves to the new curve at the step reached), so a run that turns out too slow can still end annealed.
With `train.ema` (a decay per step) the checkpoint holds an exponential moving average of the weights, which
takes nothing from the training itself; `--export` writes the plain weights of the latest state.
"""

from __future__ import annotations

import argparse
import importlib
import math
import random
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from models.frontend import DEFAULT_FRONT_END, Extractor, extractor_class, make_extractor
from models.model import AcousticModel, ModelConfig
from models.tokens import Tokenizer
from tools.augment import AugmentConfig, spec_augment
from tools.data import Batch, BatchStream


@dataclass(frozen=True)
class TrainConfig:
    """The config's `train:` section; every training default lives here, and an unknown key is an error."""

    steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-3  # the one-cycle schedule's peak
    weight_decay: float = 0.01
    clip: float = 5.0  # gradient norm
    device: str = "auto"  # cuda when present
    threads: int | None = None  # torch compute threads; None: torch's default
    workers: int = 1  # data loader processes
    amp: bool = True  # bf16 autocast, on CUDA only
    ema: float = 0.0  # decay per step of the weights' moving average written as the checkpoint; 0: none
    init: str | None = None  # fine-tune from this checkpoint (weights and normalisation statistics)
    checkpoint_every: int = 200  # steps between saved training states (for --resume)
    stats_batches: int = 8  # batches the feature mean / std are measured on
    max_minutes: float = math.inf  # stop (state saved) after this much training time
    # No label in an item's first k steps, k drawn per item from this range (0, 0: off). A unidirectional model
    # that may emit at step 0 can settle on guessing the first label there, from zero state and before any ink
    # (the label prior): the 8,000-step handwriting model put 99.1% of its first letters at step 0 (6,469 held-out
    # words), 89% of them wrong. With a k it cannot know, the first label pays only once its ink has been read.
    first_label_steps: tuple[int, int] = (0, 0)
    # Delay-penalised CTC (after Yao et al., 2023): at step t of an item of T steps every label's log-probability gets
    # this much times ((T - 1) / 2 - t) added (not renormalised: the model is pushed to the penalised posterior, so
    # of two alignments of the same text it learns the sooner); 0: off. On the handwriting model (40 ms steps), 0.1
    # had letters emitted before their ink ended (held-out word CER 23.8 -> 48.4%); 0.02 took the last letter's
    # median from 251 to 214 ms for +0.5 points of CER (BENCHMARKS.md, "Delay-penalised fine-tunes").
    delay_penalty: float = 0.0


@dataclass(frozen=True)
class DataConfig:
    """The config's `data:` section: sources mixed by weight (tools/data.py), pools, joins."""

    train: tuple[dict, ...] = ()
    bucket: int = 1  # batches cut from length-sorted pools of this many
    join_p: float = 0.0  # chance an item is two utterances with a pause between


def load_config(path: str | Path, overrides: list[str] = ()) -> dict:
    """YAML config with `a.b=value` overrides (values parsed as YAML); a number indexes a list, so
    `data.train.0.root=PATH` points the first data source at a corpus."""
    cfg = yaml.safe_load(Path(path).read_text())
    for item in overrides:
        key, value = item.split("=", 1)
        node = cfg
        *parents, leaf = key.split(".")
        try:
            for p in parents:
                node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
            node[int(leaf) if isinstance(node, list) else leaf] = yaml.safe_load(value)
        except (IndexError, ValueError, TypeError, AttributeError):
            raise ValueError(f"--set {item}: {key} is not a place in {path}") from None
    return cfg


def _dataclass(cls, values: dict | None):
    """`cls` from a config section; lists become tuples (frozen configs), unknown keys are an error."""
    names = {f.name for f in fields(cls)}
    unknown = set(values or {}) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in (values or {}).items()})


def _device(name: str) -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name))


def feature_stats(stream: BatchStream, batches: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Global mean / std per mel bin over some training batches: fixed statistics that stream."""
    total, total_sq, count = 0.0, 0.0, 0
    for i in range(batches):
        b = stream.batch(i, purpose=1)
        mask = torch.arange(b.features.shape[1])[None] < b.frames[:, None]
        x = b.features[mask]
        total, total_sq, count = total + x.sum(0), total_sq + (x.double() ** 2).sum(0), count + len(x)
    mean = total / count
    std = (total_sq / count - mean.double() ** 2).clamp_min(1e-8).sqrt().float()
    return mean.float(), std


def ctc_loss(model: AcousticModel, batch: Batch, device: torch.device, augment: AugmentConfig | None, amp: bool,
             first_label_steps: tuple[int, int] = (0, 0), delay_penalty: float = 0.0):
    stack = model.cfg.stack
    frames = batch.features[:, : batch.features.shape[1] // stack * stack].to(device)
    if augment is not None:
        normalized = spec_augment((frames - model.feature_mean) / model.feature_std, augment)
        frames = normalized * model.feature_std + model.feature_mean
    steps = (batch.frames // stack).clamp_min(1)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        # No packing: in a unidirectional LSTM the padding after a sequence cannot reach its outputs.
        log_probs, _ = model(frames, None)
    log_probs = log_probs.float()
    t = torch.arange(log_probs.shape[1], device=device)[None, :]
    label = torch.arange(log_probs.shape[2], device=device) > 0
    if delay_penalty > 0:
        bonus = delay_penalty * ((steps.to(device)[:, None] - 1) / 2 - t)
        log_probs = log_probs + bonus[:, :, None] * label[None, None, :]
    if first_label_steps[1] > 0:  # labels barred from each item's first k steps: only blank-led paths count
        k = torch.randint(first_label_steps[0], first_label_steps[1] + 1, (log_probs.shape[0], 1), device=device)
        early = t < torch.minimum(k, steps.to(device)[:, None] - 1)
        # -inf: an item the bar leaves no path is dropped by zero_infinity; a finite -1e4 charged it ~1e4 (a first
        # run with it had its smoothed loss jump to 24 a character)
        log_probs = log_probs.masked_fill(early[:, :, None] & label[None, None, :], -math.inf)
    if delay_penalty > 0:
        return unnormalized_ctc(log_probs, batch.targets, steps, batch.target_lengths)
    # (torch's gradient at the barred steps is the exact one times 1 - p(blank): same sign, weaker; kept, as the
    # bundled models were trained with it)
    return torch.nn.functional.ctc_loss(
        log_probs.transpose(0, 1), batch.targets, steps, batch.target_lengths, zero_infinity=True
    )


def unnormalized_ctc(log_scores: torch.Tensor, targets: torch.Tensor, steps: torch.Tensor,
                     target_lengths: torch.Tensor) -> torch.Tensor:
    """CTC loss (mean over items of -log sum over the text's paths / its length; items no path reaches count 0) of
    scores [items, steps, tokens] that need not sum to one a step, with its exact gradient. torch's ctc_loss returns
    exp(input) - posterior as the gradient, right only for log-probabilities (finite differences: -0.54 where -0.68
    is right). So the scores go in shifted by their log-sum a step (which moves no path's posterior) and the
    exp(input) part is taken back."""
    shift = log_scores.logsumexp(-1, keepdim=True).detach()
    y = log_scores - shift
    nll = torch.nn.functional.ctc_loss(y.transpose(0, 1), targets, steps, target_lengths, reduction="none",
                                       zero_infinity=True)
    inside = torch.arange(y.shape[1], device=y.device)[None, :] < steps.to(y.device)[:, None]
    reached = nll != 0  # zero_infinity's zero (a text of probability one would be too: never in training)
    counted = inside[:, :, None] & y.isfinite()  # (a barred label's -inf would make 0 * -inf)
    taken = (y.exp().detach() * y.masked_fill(~counted, 0.0)).sum((1, 2))
    value_shift = (shift.squeeze(-1) * inside).sum(1)  # -log sum over paths of the scores = nll of y - this
    per_item = torch.where(reached, nll - (taken - taken.detach()) - value_shift, 0.0)
    return (per_item / target_lengths.clamp_min(1).to(per_item)).mean()


def _front_end(cfg: dict) -> str:
    return cfg.get("frontend", DEFAULT_FRONT_END)


def _configs(cfg: dict) -> tuple[Any, Tokenizer, ModelConfig]:
    """The front end's config (its registry class's `Config`), the tokens and the model of a config."""
    cls = extractor_class(_front_end(cfg))
    fcfg = _dataclass(cls.Config, cfg.get("features"))
    extractor = cls(fcfg, cfg.get("model", {}).get("stack", ModelConfig.stack))
    tokenizer = Tokenizer(cfg.get("tokens", extractor.tokens))
    derived = {"input_dim": extractor.dim, "n_tokens": len(tokenizer), "feature_floor": extractor.feature_floor}
    return fcfg, tokenizer, _dataclass(ModelConfig, {**cfg.get("model", {}), **derived})


def train_config(cfg: dict) -> TrainConfig:
    """The `train:` section; floats written as `3e-3` (which YAML reads as a string) are taken as numbers."""
    tcfg = _dataclass(TrainConfig, cfg.get("train"))
    return replace(tcfg, **{f.name: float(getattr(tcfg, f.name)) for f in fields(TrainConfig) if f.type == "float"})


def augment_config(cfg: dict) -> AugmentConfig | None:
    return _dataclass(AugmentConfig, cfg["augment"]) if cfg.get("augment") is not None else None


# Training items for each front end of models.frontend.FRONT_ENDS, by the same name: (config, the model's extractor,
# tokenizer, augment) -> a BatchStream.
ITEMS = {"logmel": "tools.train:audio_batches", "pen": "tools.ink_data:ink_batches"}


def batch_stream(cfg: dict, extractor: Extractor, tokenizer: Tokenizer, augment: AugmentConfig | None) -> BatchStream:
    name = _front_end(cfg)
    if name not in ITEMS:
        raise ValueError(f"front end {name!r} has no training items (tools.train.ITEMS)")
    module, function = ITEMS[name].split(":")
    return getattr(importlib.import_module(module), function)(cfg, extractor, tokenizer, augment)


def audio_batches(cfg: dict, extractor: Extractor, tokenizer: Tokenizer, augment: AugmentConfig | None) -> BatchStream:
    """Log-mel items: utterances from the `data:` sources, augmented as waveforms and spectra (tools/augment.py)."""
    data = _dataclass(DataConfig, cfg["data"])
    return BatchStream(
        list(data.train), extractor.logmel, tokenizer, train_config(cfg).batch_size, cfg.get("seed", 0), augment,
        bucket=data.bucket, join_p=data.join_p, stack=extractor.stack,
    )


def export_state(cfg: dict, run_dir: str | Path, out: str | Path) -> Path:
    """Write the run's latest training state as a checkpoint (e.g. to try a model mid-training)."""
    state = torch.load(Path(run_dir) / "train_state.pt", map_location="cpu", weights_only=False)
    fcfg, tokenizer, mcfg = _configs(cfg)
    model = AcousticModel(mcfg)
    model.load_state_dict(state["model"])
    meta = {"config": cfg, "steps": state["step"], "train_seconds": round(state["elapsed"], 1),
            "decoding": cfg.get("decoding"), "loss_history": state.get("history", [])}
    save_checkpoint(Checkpoint(model.eval(), fcfg, tokenizer, meta, _front_end(cfg)), out)
    return Path(out)


def train(
    cfg: dict, out: str | Path, run_dir: str | Path, resume: bool = False, progress: bool = True, stop_at: int | None = None
) -> Path | None:
    """Train to `train.steps` and write the checkpoint; `stop_at` interrupts earlier (state saved, None returned)."""
    t0 = time.time()
    seed = cfg.get("seed", 0)
    torch.manual_seed(seed)
    random.seed(seed)
    tcfg = train_config(cfg)
    device = _device(tcfg.device)
    if tcfg.threads is not None:
        torch.set_num_threads(tcfg.threads)
    amp = tcfg.amp and device.type == "cuda"
    fcfg, tokenizer, mcfg = _configs(cfg)
    augment = augment_config(cfg)
    steps_total = tcfg.steps
    stream = batch_stream(cfg, make_extractor(_front_end(cfg), fcfg, mcfg.stack), tokenizer, augment)

    model = AcousticModel(mcfg).to(device)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tcfg.ema), use_buffers=True) if tcfg.ema else None
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tcfg.lr, total_steps=steps_total, pct_start=0.1)
    run_dir = Path(run_dir)
    state_path = run_dir / "train_state.pt"
    step, history = 0, []
    if resume and state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched_state = state["scheduler"]
        if sched_state["total_steps"] != steps_total:  # train.steps changed: the rest of the one cycle re-planned to it
            sched_state = {**sched_state, "total_steps": steps_total, "_schedule_phases": sched.state_dict()["_schedule_phases"]}
        sched.load_state_dict(sched_state)
        step, history = state["step"], state["history"]
        if ema is not None:
            ema.load_state_dict(state["ema"])
        t0 -= state["elapsed"]
    elif tcfg.init:  # fine-tune: weights and normalisation statistics from another checkpoint
        model.load_state_dict(load_checkpoint(tcfg.init).model.state_dict())
    else:
        mean, std = feature_stats(stream, tcfg.stats_batches)
        model.feature_mean.copy_(mean.to(device))
        model.feature_std.copy_(std.to(device))

    stream.start = step
    workers = tcfg.workers
    loader = torch.utils.data.DataLoader(
        stream, batch_size=None, num_workers=workers, prefetch_factor=4 if workers else None,
        worker_init_fn=lambda _: torch.set_num_threads(1),
    )
    max_seconds = tcfg.max_minutes * 60
    every = tcfg.checkpoint_every
    bar = tqdm(total=steps_total, initial=step, disable=not progress, desc="train", dynamic_ncols=True,
               mininterval=1 if sys.stderr.isatty() else 30)

    def save_state() -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                 "step": step, "elapsed": time.time() - t0, "history": history, "rng": torch.get_rng_state()}
        if ema is not None:
            state["ema"] = ema.state_dict()
        torch.save(state, state_path.with_suffix(".tmp"))
        state_path.with_suffix(".tmp").replace(state_path)

    model.train()
    smooth = None
    batches = iter(loader)  # draws from torch's generator: restore the saved state after it, not before
    if resume and state_path.exists():
        torch.set_rng_state(state["rng"])
    for batch in batches:
        if step >= steps_total or step == stop_at or time.time() - t0 > max_seconds:
            break
        loss = ctc_loss(model, batch, device, augment, amp, tcfg.first_label_steps, tcfg.delay_penalty)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.clip)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update_parameters(model)
        step += 1
        smooth = loss.item() if smooth is None else 0.95 * smooth + 0.05 * loss.item()
        if step % 10 == 1:
            history.append([step, round(loss.item(), 4)])
        bar.update(1)
        bar.set_postfix(loss=f"{smooth:.3f}", lr=f"{sched.get_last_lr()[0]:.2e}", refresh=False)  # drawn at tqdm's interval
        if step % every == 0:
            save_state()
    save_state()  # also when stopped by stop_at or the time limit: --resume goes on from here
    bar.close()
    if step == stop_at and step < steps_total:
        return None
    if ema is not None:
        model = ema.module
    model.eval().cpu()
    meta = {"config": cfg, "steps": step, "train_seconds": round(time.time() - t0, 1), "final_loss": smooth, "loss_history": history,
            "device": str(device), "torch": torch.__version__, "decoding": cfg.get("decoding")}
    save_checkpoint(Checkpoint(model, fcfg, tokenizer, meta, _front_end(cfg)), out)
    return Path(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("--out", required=True, help="checkpoint to write")
    p.add_argument("--run-dir", help="training state folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--export", action="store_true", help="only write the run's latest state as a checkpoint")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    args = p.parse_args(argv)
    cfg = load_config(args.config, args.set)
    run_dir = args.run_dir or f"runs/{Path(args.config).stem}"
    if args.export:
        path = export_state(cfg, run_dir, args.out)
    else:
        path = train(cfg, args.out, run_dir, resume=args.resume)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
