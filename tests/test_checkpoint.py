"""Checkpoints carry everything the recognizer needs, and bad files fail clearly."""

from __future__ import annotations

import pytest
import torch

from models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def test_round_trip_keeps_weights_features_tokens(tmp_path):
    ckpt = load_checkpoint("digits")
    path = tmp_path / "copy.pt"
    save_checkpoint(ckpt, path)
    again = load_checkpoint(path)
    assert again.features == ckpt.features
    assert again.tokenizer.tokens == ckpt.tokenizer.tokens
    assert again.model.cfg == ckpt.model.cfg
    for (k, a), (_, b) in zip(ckpt.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(a, b), k
    assert float(again.model.feature_std.min()) > 0  # normalisation statistics travel with the weights


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"hello": "world"}, "not an rnnstream checkpoint"),
        ({"format": "rnnstream-checkpoint", "version": 99}, "version 99"),
        ({"format": "rnnstream-checkpoint", "version": 1, "tokens": ["a"]}, "inconsistent"),
    ],
)
def test_foreign_files_are_rejected_with_a_reason(tmp_path, payload, message):
    path = tmp_path / "bad.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_garbage_and_missing_files(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="no bundled model"):
        load_checkpoint("klingon")


@pytest.mark.parametrize("name, input_dim", [("digits", 40), ("handwriting", 11)])
def test_version_1_files_load_with_the_renamed_settings(tmp_path, name, input_dim):
    """Format 1 named the model's input size `n_mels` (the pen model too): such a file loads, and what is saved from
    it is version 2."""
    payload = torch.load(f"models/bundled/{name}.pt", weights_only=True)
    config = dict(payload["model_config"])
    config["n_mels"] = config.pop("input_dim", config.get("n_mels"))
    torch.save({**payload, "version": 1, "model_config": config}, tmp_path / "v1.pt")
    ckpt = load_checkpoint(tmp_path / "v1.pt")
    assert ckpt.model.cfg == load_checkpoint(name).model.cfg and ckpt.model.cfg.input_dim == input_dim
    save_checkpoint(ckpt, tmp_path / "v2.pt")
    saved = torch.load(tmp_path / "v2.pt", weights_only=True)
    assert saved["version"] == 2 and "n_mels" not in saved["model_config"]
