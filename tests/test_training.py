"""The training recipe on real audio: a small model learns, its checkpoint serves, a resumed run is exact."""

from __future__ import annotations

import torch

from conftest import REPO
from models.checkpoint import load_checkpoint
from stream.session import Recognizer
from tools.train import load_config, train

TINY = REPO / "configs" / "tiny.yaml"


def test_tiny_model_learns_and_its_checkpoint_transcribes(tmp_path, digits_wav):
    cfg = load_config(TINY, ["train.steps=120"])
    path = train(cfg, tmp_path / "tiny.pt", tmp_path / "run", progress=False)
    ckpt = load_checkpoint(path)
    history = ckpt.meta["loss_history"]
    first, last = history[0][1], history[-1][1]
    assert last < 0.5 * first, history  # CTC loss on real FSDD audio falls
    assert ckpt.meta["steps"] == 120
    session = Recognizer(ckpt).session(16000)
    import soundfile as sf

    audio, _ = sf.read(digits_wav, dtype="float32")
    session.accept(audio)
    session.finish()  # the trained checkpoint runs through the streaming path


def test_resumed_training_matches_an_uninterrupted_run(tmp_path):
    cfg = load_config(TINY, ["train.steps=12", "train.checkpoint_every=4", "model.dropout=0.0"])
    straight = train(cfg, tmp_path / "a.pt", tmp_path / "run_a", progress=False)
    assert train(cfg, tmp_path / "b.pt", tmp_path / "run_b", progress=False, stop_at=6) is None
    resumed = train(cfg, tmp_path / "b.pt", tmp_path / "run_b", resume=True, progress=False)
    a, b = load_checkpoint(straight).model.state_dict(), load_checkpoint(resumed).model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5, msg=key)
