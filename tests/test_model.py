"""The acoustic model's causal mean normalisation: exact across calls, per stream in a batch; it takes a fixed
channel colour off real speech, its gate keeps a long pause from pulling the mean down to the silence, and its
floor keeps a stream's silent lead-in out of the mean."""

from __future__ import annotations

import pytest
import torch

from models.features import FeatureConfig, LogMel
from models.model import AcousticModel, ModelConfig, running_mean_normalise


def real_features(digits_audio, repeat: int = 1) -> torch.Tensor:
    """Log-mel frames [1, frames, n_mels] of a real connected-digit utterance (`repeat` times), in whole steps."""
    feats = LogMel(FeatureConfig())(torch.from_numpy(digits_audio[0]).float().repeat(repeat))
    return feats[None, : len(feats) // 3 * 3]


def test_normalised_model_is_exact_across_calls_and_per_stream(digits_audio):
    torch.manual_seed(0)
    model = AcousticModel(ModelConfig(hidden=32, cmn_steps=50, cmn_gate_db=25.0)).eval()
    x = real_features(digits_audio)
    with torch.no_grad():
        whole, whole_state = model(x)
        state, parts = None, []
        for a, b in [(0, 3), (3, 33), (33, 36), (36, x.shape[1])]:
            y, state = model(x[:, a:b], state)
            parts.append(y)
        # The LSTM's own float rounding varies with the call's length (~1e-7); the normalisation adds none.
        torch.testing.assert_close(torch.cat(parts, 1), whole, atol=1e-5, rtol=0)
        assert torch.equal(state.norm, whole_state.norm)
        # A shorter stream in the same call: its output and state stop at its own last step.
        short = x.shape[1] // 3 // 2
        batch = torch.cat([x, torch.cat([x[:, : short * 3], torch.zeros_like(x[:, short * 3 :])], 1)])
        y, batch_state = model(batch, None, torch.tensor([x.shape[1] // 3, short]))
        alone, alone_state = model(x[:, : short * 3])
        torch.testing.assert_close(y[1, :short], alone[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(batch_state.norm[:, 1], alone_state.norm[:, 0], atol=1e-5, rtol=0)


def normalise(x: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """Frames [1, steps * 3, n_mels] -> running-mean normalised [1, steps, 3, n_mels], from a fresh state."""
    steps = x.shape[1] // 3
    state = AcousticModel(cfg).initial_state(1)[2]
    energy = x.reshape(1, steps, -1).mean(-1)
    return running_mean_normalise(x.reshape(1, steps, 3, -1), energy, state, None, cfg)[0]


def test_running_mean_takes_a_fixed_channel_colour_off(digits_audio):
    x = real_features(digits_audio, repeat=3)
    steps = x.shape[1] // 3
    cfg = ModelConfig(cmn_steps=100, cmn_prior_steps=10)
    tilt = torch.linspace(-3.0, 3.0, x.shape[-1])  # log power: a microphone brighter at the top, duller at the bottom
    plain, coloured = normalise(x, cfg), normalise(x + tilt, cfg)
    left = (coloured - plain).abs().amax((0, 2, 3))  # what remains of the colour, per step
    assert left[0] > 0.5 * tilt.abs().max()  # at the start the mean is still the training set's
    assert left[100:].max() < 0.1 * tilt.abs().max(), left[100:].max()  # after 3 s, under a tenth of it
    assert steps > 150


def test_gate_keeps_a_long_pause_from_pulling_the_mean_down(digits_audio):
    speech = torch.from_numpy(digits_audio[0]).float()
    quiet = torch.randn(16000 * 30) * 1e-3  # 30 s of noise at -60 dBFS, as between a microphone's utterances
    logmel = LogMel(FeatureConfig())
    first, pause = logmel(speech), logmel(quiet)
    x = torch.cat([first, pause, first])[None]
    x = x[:, : x.shape[1] // 3 * 3]
    end, onset = len(first) // 3 - 1, (len(first) + len(pause)) // 3  # last step of the first speech, first of the next

    def mean_drift(cfg: ModelConfig) -> float:
        """How far the running mean moved from the end of the first utterance to the start of the second."""
        mean = x.reshape(1, -1, 3, x.shape[-1]) - normalise(x, cfg)  # the subtracted mean (in raw log-mel units)
        return float((mean[0, onset, 0] - mean[0, end, 0]).abs().mean())

    gated, plain = mean_drift(ModelConfig(cmn_steps=100, cmn_gate_db=25.0)), mean_drift(ModelConfig(cmn_steps=100))
    assert plain > 2.0, plain  # without the gate the mean follows the silence...
    assert gated < 0.1 * plain, (gated, plain)  # ...with it, the speech comes back to the mean it left


@pytest.mark.parametrize("lead_dbfs", [None, -70.0])
def test_floor_keeps_a_silent_lead_in_out_of_the_mean(digits_audio, lead_dbfs):
    # A file that opens with 1 s of zeros (or a line's -70 dBFS hiss): with the floor the speech is normalised
    # exactly as if the stream had started with it; without, the mean starts from the silence.
    lead = torch.zeros(16000) if lead_dbfs is None else torch.randn(16000, generator=torch.Generator().manual_seed(0))
    lead = LogMel(FeatureConfig())(lead * 10 ** ((lead_dbfs or 0.0) / 20))
    speech = real_features(digits_audio)
    steps = len(lead) // 3
    x = torch.cat([lead[None, : steps * 3], speech], 1)

    floored = ModelConfig(cmn_steps=100, cmn_gate_db=25.0, cmn_floor_db=3.0)
    torch.testing.assert_close(normalise(x, floored)[:, steps:], normalise(speech, floored), atol=1e-5, rtol=0)
    plain = ModelConfig(cmn_steps=100, cmn_gate_db=25.0)
    assert (normalise(x, plain)[:, steps:] - normalise(speech, plain)).abs().mean() > 1.0


def test_streams_of_many_lengths_in_one_call_each_stop_at_their_own_end(digits_audio):
    """Six lengths in one call (a server's ragged tick: a plain LSTM call per length at inference, one packed call
    in training): each stream's output and state are what it gets alone."""
    torch.manual_seed(0)
    model = AcousticModel(ModelConfig(hidden=32, cmn_steps=50, cmn_gate_db=25.0)).eval()
    x = real_features(digits_audio)
    steps = x.shape[1] // 3
    lengths = [steps, steps - 1, steps // 2, steps // 3, 7, 1]
    batch = torch.cat([torch.cat([x[:, : n * 3], torch.zeros_like(x[:, n * 3 :])], 1) for n in lengths])
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            y, state = model(batch, None, torch.tensor(lengths))
            for i, n in enumerate(lengths):
                alone, alone_state = model(x[:, : n * 3])
                torch.testing.assert_close(y[i, :n], alone[0], atol=1e-5, rtol=0)
                torch.testing.assert_close(state.h[:, i], alone_state.h[:, 0], atol=1e-5, rtol=0)
                torch.testing.assert_close(state.c[:, i], alone_state.c[:, 0], atol=1e-5, rtol=0)
