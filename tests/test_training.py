"""The training recipe on real audio: a small model learns, its checkpoint serves, a resumed run is exact."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
from conftest import REPO

from models.checkpoint import load_checkpoint
from stream.session import Recognizer
from stream.transcribe import transcribe_array
from tools.train import export_state, load_config, train

TINY = REPO / "configs" / "tiny.yaml"


@pytest.mark.slow
def test_tiny_model_learns_and_its_checkpoint_transcribes(tmp_path, digits_wav):
    cfg = load_config(TINY, ["train.steps=120"])
    path = train(cfg, tmp_path / "tiny.pt", tmp_path / "run", progress=False)
    ckpt = load_checkpoint(path)
    history = ckpt.meta["loss_history"]
    first, last = history[0][1], history[-1][1]
    assert last < 0.5 * first, history  # CTC loss on real FSDD audio falls
    assert ckpt.meta["steps"] == 120
    import soundfile as sf

    # The trained checkpoint serves through the streaming path: it says something, the same in any chunking.
    recognizer = Recognizer(ckpt).with_options(beam=0)
    audio, _ = sf.read(digits_wav, dtype="float32")
    finals = lambda chunk: [(e.text, e.start, e.end) for e in transcribe_array(recognizer, audio, 16000, chunk) if e.type == "final"]
    whole = finals(0)
    assert whole and whole == finals(1234)


def test_a_run_resumed_with_fewer_steps_ends_annealed_at_the_new_total(tmp_path):
    # train.steps changed on --resume: the rest of the one cycle follows the new total, so the run ends at its floor.
    cfg = load_config(TINY, ["train.steps=40", "train.checkpoint_every=4", "train.batch_size=2"])
    assert train(cfg, tmp_path / "a.pt", tmp_path / "run", progress=False, stop_at=12) is None
    state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=False)
    assert state["step"] == 12 and state["scheduler"]["total_steps"] == 40
    shorter = load_config(TINY, ["train.steps=24", "train.checkpoint_every=4", "train.batch_size=2"])
    ckpt = load_checkpoint(train(shorter, tmp_path / "a.pt", tmp_path / "run", resume=True, progress=False))
    assert ckpt.meta["steps"] == 24
    train(shorter, tmp_path / "b.pt", tmp_path / "straight", progress=False)  # 24 steps planned from the start
    resumed, straight = (torch.load(tmp_path / d / "train_state.pt", weights_only=False) for d in ("run", "straight"))
    assert resumed["scheduler"]["total_steps"] == 24
    lr = lambda state: state["optimizer"]["param_groups"][0]["lr"]
    assert lr(resumed) == pytest.approx(lr(straight), rel=1e-9)  # the same end of the one cycle: annealed
    assert lr(straight) < 0.01 * resumed["optimizer"]["param_groups"][0]["max_lr"]


@pytest.mark.slow
def test_resumed_training_matches_an_uninterrupted_run(tmp_path):
    # Augmented, joined, length-bucketed batches; the stop falls inside a pool of four batches. The weights'
    # moving average (the checkpoint) is resumed too.
    augment = "{speed: [0.9, 1.1], shift_samples: 160, mel_warp: [0.9, 1.1], eq_db: 6.0, telephone_prob: 0.5}"
    cfg = load_config(
        TINY, ["train.steps=12", "train.checkpoint_every=4", "model.dropout=0.0", "data.bucket=4", "data.join_p=0.3",
               f"augment={augment}", "train.ema=0.8"]
    )
    straight = train(cfg, tmp_path / "a.pt", tmp_path / "run_a", progress=False)
    assert train(cfg, tmp_path / "b.pt", tmp_path / "run_b", progress=False, stop_at=6) is None
    resumed = train(cfg, tmp_path / "b.pt", tmp_path / "run_b", resume=True, progress=False)
    a, b = load_checkpoint(straight).model.state_dict(), load_checkpoint(resumed).model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5, msg=key)
    plain = load_checkpoint(export_state(cfg, tmp_path / "run_a", tmp_path / "plain.pt")).model.state_dict()
    assert not torch.allclose(plain["output.weight"], a["output.weight"])  # the checkpoint is the average
    torch.testing.assert_close(plain["feature_mean"], a["feature_mean"])


def test_mel_warp_moves_a_tone_and_eq_keeps_the_spectrum_shape():
    import numpy as np

    from models.features import FeatureConfig, LogMel
    from tools.augment import AugmentConfig, augment_features

    t = torch.arange(16000) / 16000
    logmel = LogMel(FeatureConfig())(torch.sin(2 * torch.pi * 1500 * t))
    peak = int(logmel.mean(0).argmax())
    up = augment_features(logmel, AugmentConfig(mel_warp=(1.1, 1.1)), np.random.default_rng(0))
    down = augment_features(logmel, AugmentConfig(mel_warp=(0.9, 0.9)), np.random.default_rng(0))
    assert int(up.mean(0).argmax()) < peak < int(down.mean(0).argmax())  # a longer vocal tract: lower formants
    same = augment_features(logmel, AugmentConfig(), np.random.default_rng(0))
    torch.testing.assert_close(same, logmel)
    eq = augment_features(logmel, AugmentConfig(eq_db=6.0), np.random.default_rng(1)) - logmel
    assert torch.allclose(eq, eq[0].expand_as(eq))  # one curve for every frame: a channel, not noise
    assert 0 < eq.abs().max() <= 6.0 * (1 + 1 / 2 + 1 / 3) * np.log(10) / 10


def test_a_leave_one_speaker_out_fold_never_trains_on_its_speaker():
    from tools.data import make_source
    from tools.loso import SPEAKERS, fold_config

    cfg = fold_config(load_config(REPO / "configs" / "digits.yaml"), "george")
    fsdd = [make_source(s) for s in cfg["data"]["train"] if s["type"] == "fsdd_connected"]
    assert fsdd and all({c.speaker for c in source.clips} == set(SPEAKERS) - {"george"} for source in fsdd)


def test_the_validation_model_never_trains_on_a_held_out_voice(tmp_path):
    import json

    from tools.data import make_source
    from tools.speechocean import split
    from tools.validate import fold_config

    info = split(tmp_path / "so762", seed=14)
    held = set(info["held_out"])
    assert len(held) == 25 and set(info["held_out"].values()) == {"adult/female", "adult/male", "child/female", "child/male"}
    recipe = load_config(REPO / "configs" / "digits_real.yaml")
    for source in recipe["data"]["train"]:  # the recipe's speechocean manifests, written here
        if source["type"] == "manifest" and "so762" in source["path"]:
            source["path"] = str(tmp_path / "so762" / source["path"].rsplit("/", 1)[1])
    cfg = fold_config(recipe, "jackson")
    speakers = set()
    for spec in cfg["data"]["train"]:
        source = make_source(spec)
        if spec["type"] == "fsdd_connected":
            speakers |= {c.speaker for c in source.clips}
        elif "so762" in spec["path"]:
            speakers |= {r["speaker"] for r in source.rows}
    assert "jackson" not in speakers and not held & speakers and len(speakers) > 100
    scoring = (tmp_path / "so762" / "heldout_digits" / "manifest.jsonl").read_text().splitlines()
    assert scoring and {json.loads(line)["speaker"] for line in scoring} <= held


def test_a_share_of_the_training_speakers_is_drawn_per_group_and_nests():
    """speechocean762's real speaker list: the data-scaling run keeps half of each group's training speakers, a
    smaller share keeps a subset of them, and the held-out speakers stay out either way."""
    from tools.data import read_manifest
    from tools.speechocean import GROUPS, ROOT, choose_held_out, group, keep_fraction

    rows = read_manifest(REPO / ROOT / "manifest.jsonl")
    held = choose_held_out(rows, [6, 6, 6, 7], 14)
    train = [r for r in rows if r["speaker"] not in held]
    speakers = lambda rs, g: {r["speaker"] for r in rs if group(r) == g}
    half, quarter = keep_fraction(train, 0.5, 14), keep_fraction(train, 0.25, 14)
    for g in GROUPS:
        assert abs(len(speakers(half, g)) - len(speakers(train, g)) / 2) <= 0.5
        assert speakers(quarter, g) <= speakers(half, g) and speakers(quarter, g)
    assert all(r["speaker"] not in held for r in half)
    assert keep_fraction(train, 0.5, 14) == half and keep_fraction(train, 1.0, 14) == train
    with pytest.raises(ValueError):
        keep_fraction(train, 0.0, 14)


def test_tight_start_cuts_the_leading_pause_and_nothing_of_the_word():
    # The front end adds no silence before a stream, so training must show words from the stream's first sample.
    import numpy as np
    import soundfile as sf
    from conftest import FSDD

    from tools.augment import AugmentConfig, augment_audio

    clip, rate = sf.read(FSDD / "3_george_7.wav", dtype="float32")
    pause = np.random.default_rng(0).normal(0, 1e-3, rate // 2).astype(np.float32)  # 0.5 s at -60 dBFS
    plain = AugmentConfig(speed=(1.0, 1.0), gain_db=(0.0, 0.0), noise_prob=0.0, telephone_prob=0.0)
    kept = augment_audio(np.concatenate([pause, clip]), rate, plain, np.random.default_rng(0))
    assert len(kept) == len(pause) + len(clip)
    tight = AugmentConfig(**{**plain.__dict__, "tight_start_p": 1.0})
    cut = augment_audio(np.concatenate([pause, clip]), rate, tight, np.random.default_rng(0))
    assert len(clip) - 0.1 * rate <= len(cut) <= len(clip)  # the pause gone, at most the clip's own lead with it
    np.testing.assert_array_equal(cut[-len(clip) // 2 :], clip[-len(clip) // 2 :])


def test_fsdd_jason_clips_are_cut_to_their_word():
    # fsdd-jason's clips are 3 s: the word, noise at about -44 dBFS, often a burst of the next take at the end.
    import numpy as np
    import soundfile as sf
    from conftest import DATA

    from tools.digits_data import fsdd_clips, load_clip

    clips = fsdd_clips([DATA / "fsdd", DATA / "fsdd-jason"], speakers=["jason", "george"])
    jason = [c for c in clips if c.speaker == "jason"]
    assert len(jason) == 492 and {c.digit for c in jason} == set(range(10))
    lengths = [len(load_clip(c.path, 8000, cache=False)) / 8000 for c in jason[::10]]
    assert max(lengths) < 1.5 and np.median(lengths) > 0.15, lengths
    for c in jason[::50]:  # the kept part is louder than the clip's noise floor (its median 10 ms level)
        audio, _ = sf.read(c.path, dtype="float32")
        floor = np.median(np.sqrt(np.mean(audio[: len(audio) // 80 * 80].reshape(-1, 80) ** 2, axis=1)))
        kept = load_clip(c.path, 8000, cache=False)
        assert np.sqrt(np.mean(kept**2)) > 2 * floor


def _tiny_model_keeping_logits():
    """A small untrained model whose output logits (with their gradients) are kept in the list returned with it."""
    from models.model import AcousticModel, ModelConfig

    torch.manual_seed(0)
    model = AcousticModel(ModelConfig(input_dim=5, stack=2, hidden=16, layers=1, n_tokens=6))
    logits = []

    def keep(_module, _inputs, out):
        out.retain_grad()
        logits.append(out)

    model.output.register_forward_hook(keep)
    return model, logits


def test_first_label_steps_leave_only_blank_in_an_items_first_steps():
    # Barred from the first 3 steps, a label there gets no CTC posterior: the loss pushes every label's logit down
    # and blank's up at those steps, in every item; unbarred, step 0 holds the first label on some paths.
    from tools.data import Batch
    from tools.train import ctc_loss

    model, logits = _tiny_model_keeping_logits()
    targets = torch.tensor([2, 3, 4, 5, 2, 3])
    batch = Batch(torch.randn(2, 24, 5), torch.tensor([24, 20]), targets, torch.tensor([4, 2]), ["", ""])
    for bar, barred in (((3, 3), True), ((0, 0), False)):
        logits.clear()
        ctc_loss(model, batch, torch.device("cpu"), None, False, bar).backward()
        g = logits[0].grad[:, :3]
        assert bool((g[..., 0] < 0).all() and (g[..., 1:] > 0).all()) == barred


def test_delay_penalty_moves_the_alignment_earlier():
    # The CTC gradient on the logits is softmax minus the alignment's posterior: with the delay penalty the posterior
    # weight of the labels sits at earlier steps, in every item.
    from tools.data import Batch
    from tools.train import ctc_loss

    model, logits = _tiny_model_keeping_logits()
    batch = Batch(torch.randn(2, 40, 5), torch.tensor([40, 32]), torch.tensor([2, 3, 4, 5, 2]), torch.tensor([3, 2]), ["", ""])
    mean_step = []
    for penalty in (0.0, 0.3):
        logits.clear()
        ctc_loss(model, batch, torch.device("cpu"), None, False, delay_penalty=penalty).backward()
        out = logits[0]
        scale = (batch.target_lengths * len(batch.target_lengths)).float()[:, None, None]  # (a mean per label and item)
        posterior = (out.softmax(-1) - out.grad * scale).detach()
        labels = posterior[..., 1:].sum(-1)
        mean_step.append((labels * torch.arange(out.shape[1])).sum(1) / labels.sum(1))
    assert (mean_step[1] < mean_step[0] - 0.5).all(), mean_step


def test_unnormalized_ctc_has_the_exact_gradient():
    # Scores that do not sum to one a step (the delay penalty's): the value is -log of the text's summed path scores
    # (every path enumerated), the gradient matches finite differences; torch's ctc_loss alone gets it wrong.
    from tools.train import unnormalized_ctc

    torch.manual_seed(0)
    x = (torch.randn(2, 7, 4).log_softmax(-1) + 0.5 * torch.randn(2, 7, 4)).double().requires_grad_()
    targets, steps, lengths = torch.tensor([1, 2, 3, 1]), torch.tensor([7, 5]), torch.tensor([2, 2])
    loss = unnormalized_ctc(x, targets, steps, lengths)
    loss.backward()

    def paths(item: int, text: list[int]) -> float:
        total = 0.0
        for path in itertools.product(range(4), repeat=int(steps[item])):
            collapsed = [k for j, k in enumerate(path) if k and (j == 0 or path[j - 1] != k)]
            if collapsed == text:
                total += math.exp(sum(x[item, t, k].item() for t, k in enumerate(path)))
        return -math.log(total)

    assert math.isclose(loss.item(), (paths(0, [1, 2]) / 2 + paths(1, [3, 1]) / 2) / 2, rel_tol=1e-9)
    numeric = torch.zeros_like(x)
    for idx in itertools.product(range(2), range(7), range(4)):
        d = torch.zeros_like(x)
        d[idx] = 1e-6
        numeric[idx] = (unnormalized_ctc(x.detach() + d, targets, steps, lengths)
                        - unnormalized_ctc(x.detach() - d, targets, steps, lengths)) / 2e-6
    assert torch.allclose(x.grad, numeric, atol=1e-6)
    assert x.grad[1, 5:].abs().max() == 0  # past an item's steps
    naive = x.detach().clone().requires_grad_()
    torch.nn.functional.ctc_loss(naive.transpose(0, 1), targets, steps, lengths).backward()
    assert not torch.allclose(naive.grad, numeric, atol=1e-3)
    barred = x.detach().clone().requires_grad_()  # labels barred (-inf) as ctc_loss bars them: no NaN comes back
    early = torch.zeros_like(x, dtype=torch.bool)
    early[:, :2, 1:] = True
    unnormalized_ctc(barred.masked_fill(early, -math.inf), targets, steps, lengths).backward()
    assert barred.grad.isfinite().all() and (barred.grad[early] == 0).all()


def test_set_reaches_into_lists_and_refuses_places_that_are_not_there():
    cfg = load_config(REPO / "configs" / "digits_so762.yaml", ["data.train.1.path=/corpus/manifest.jsonl", "train.steps=7"])
    assert cfg["data"]["train"][1]["path"] == "/corpus/manifest.jsonl" and cfg["train"]["steps"] == 7
    with pytest.raises(ValueError, match="not a place"):
        load_config(REPO / "configs" / "digits_so762.yaml", ["data.train.9.root=/x"])


def test_the_validation_fold_makes_babble_of_its_training_speakers_only():
    from tools.validate import fold_config

    cfg = fold_config(load_config(REPO / "configs" / "digits_rooms.yaml"), "jackson")
    assert cfg["augment"]["babble_manifests"] == ["data/so762/train.jsonl", "../shared/data/arctic-cathy/manifest.jsonl"]
    assert all("all" not in Path(s["path"]).name for s in cfg["data"]["train"] if s["type"] == "manifest")
