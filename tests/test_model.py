"""The acoustic model's causal mean normalisation: exact across calls, per stream in a batch, and it takes a
fixed channel colour off real speech."""

from __future__ import annotations

import torch

from models.features import FeatureConfig, LogMel
from models.model import AcousticModel, ModelConfig, running_mean_normalise


def real_features(digits_audio, repeat: int = 1) -> torch.Tensor:
    """Log-mel frames [1, frames, n_mels] of a real connected-digit utterance (`repeat` times), in whole steps."""
    feats = LogMel(FeatureConfig())(torch.from_numpy(digits_audio[0]).float().repeat(repeat))
    return feats[None, : len(feats) // 3 * 3]


def test_normalised_model_is_exact_across_calls_and_per_stream(digits_audio):
    torch.manual_seed(0)
    model = AcousticModel(ModelConfig(hidden=32, cmn_steps=50)).eval()
    x = real_features(digits_audio)
    with torch.no_grad():
        whole, whole_state = model(x)
        state, parts = None, []
        for a, b in [(0, 3), (3, 33), (33, 36), (36, x.shape[1])]:
            y, state = model(x[:, a:b], state)
            parts.append(y)
        # The LSTM's own float rounding varies with the call's length (~1e-7); the normalisation adds none.
        torch.testing.assert_close(torch.cat(parts, 1), whole, atol=1e-5, rtol=0)
        assert torch.equal(state[2], whole_state[2])
        # A shorter stream in the same call: its output and state stop at its own last step.
        short = x.shape[1] // 3 // 2
        batch = torch.cat([x, torch.cat([x[:, : short * 3], torch.zeros_like(x[:, short * 3 :])], 1)])
        y, batch_state = model(batch, None, torch.tensor([x.shape[1] // 3, short]))
        alone, alone_state = model(x[:, : short * 3])
        torch.testing.assert_close(y[1, :short], alone[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(batch_state[2][:, 1], alone_state[2][:, 0], atol=1e-5, rtol=0)


def test_running_mean_takes_a_fixed_channel_colour_off(digits_audio):
    x = real_features(digits_audio, repeat=3)
    steps = x.shape[1] // 3
    x = x.reshape(1, steps, 3, -1)
    tilt = torch.linspace(-3.0, 3.0, x.shape[-1])  # a microphone 3 dB-ish in log power louder at the top, quieter at the bottom
    state = torch.zeros(1, 1, x.shape[-1] + 1)
    plain, _ = running_mean_normalise(x, state, None, window=100, prior=10)
    coloured, _ = running_mean_normalise(x + tilt, state, None, window=100, prior=10)
    left = (coloured - plain).abs().amax((0, 2, 3))  # what remains of the colour, per step
    assert left[0] > 0.5 * tilt.abs().max()  # at the start the mean is still the training set's
    assert left[100:].max() < 0.1 * tilt.abs().max(), left[100:].max()  # after 3 s, under a tenth of it
    assert steps > 150
