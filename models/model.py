"""The acoustic model: frame stacking, a causal running mean normalisation, a unidirectional LSTM and a CTC
output layer.

The recurrent state is explicit (`forward(x, state) -> (log_probs, state)`), so one model serves any
number of streams: a caller keeps each stream's state and batches streams by stacking every tensor of it
along dimension 1.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

# At inference, streams of up to this many different lengths in one call take one plain LSTM call per length. On
# this CPU that beat one packed call at every count measured (digits model, 223 streams of 6 lengths: 71 against
# 177 ms; of 51 lengths: 127 against 148 ms). At 4 the packed path cost a server that fell behind twice the time per
# audio second just when its ticks got ragged, so it fell further behind. Training (gradients on) packs.
RAGGED_CALLS = 64
# A lead-in step (ModelConfig.idle_lead_in) is a certain blank: log-probability 0 for the blank (token 0 of every
# tokenizer, models.tokens), this for every other token. The zero state's own output was no blank: on a dev phone
# number, 18 such steps were read as "two".
BLANK_INDEX = 0
LEAD_IN_LOG_PROB = -30.0


class State(NamedTuple):
    """One or many streams' recurrent state; streams along dimension 1 of every tensor."""

    h: torch.Tensor  # LSTM hidden state [layers, batch, hidden]
    c: torch.Tensor  # LSTM cell state [layers, batch, hidden]
    norm: torch.Tensor  # running mean [1, batch, input_dim + 2]: decayed sum, count (0 until the first step), peak

    def select(self, index: torch.Tensor) -> State:
        return State(*(t[:, index] for t in self))


@dataclass(frozen=True)
class ModelConfig:
    input_dim: int = 40  # values per input frame: the front end's dim (mel bins for audio, 11 for the pen)
    stack: int = 3  # frames per LSTM step: 3 x 10 ms -> 30 ms steps
    hidden: int = 256
    layers: int = 2
    n_tokens: int = 29
    dropout: float = 0.1
    # Causal mean normalisation over about this many steps (0: off). It takes the microphone's and the voice's
    # long-term spectrum off the features, as the stream goes, so a new channel does not look like new sounds.
    cmn_steps: int = 0
    cmn_prior_steps: int = 10  # weight of the training set's mean (zero after global normalisation) at the start
    cmn_gate_db: float = 0.0  # steps this far below the recent peak level do not move the mean (0: all do)
    cmn_gate_fall_db: float = 0.003  # the peak level falls this much a step (0.1 dB/s at 30 ms steps: 3 dB in 30 s)
    # Steps at most this far above digital silence never move the mean (0: off), so a stream that opens with
    # zeros or a near-silent line starts from the training set's mean, not from the silence's spectrum.
    cmn_floor_db: float = 0.0
    feature_floor: float = math.log(1e-6)  # the features' digital silence (log of LogMel's log_floor)
    # A stream's steps before its first one above that floor (cmn_floor_db) leave the LSTM at its zero state and
    # are certain blanks, so a lead-in of silence of any length is read as if the stream began at the sound (issue
    # 26: 0.5 and 5 s of zeros were read differently). Needs cmn_floor_db, whose count says "started".
    idle_lead_in: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


class AcousticModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.idle_lead_in and not (cfg.cmn_steps and cfg.cmn_floor_db):
            raise ValueError("idle_lead_in needs the running mean's floor (cmn_steps and cmn_floor_db)")
        self.cfg = cfg
        # Global feature statistics from training: streaming-safe normalisation, saved with the weights.
        self.register_buffer("feature_mean", torch.zeros(cfg.input_dim))
        self.register_buffer("feature_std", torch.ones(cfg.input_dim))
        self.lstm = nn.LSTM(
            cfg.input_dim * cfg.stack, cfg.hidden, cfg.layers, batch_first=True, dropout=cfg.dropout if cfg.layers > 1 else 0.0
        )
        self.output = nn.Linear(cfg.hidden, cfg.n_tokens)

    def initial_state(self, batch: int = 1) -> State:
        p = next(self.parameters())
        zeros = torch.zeros(self.cfg.layers, batch, self.cfg.hidden, device=p.device, dtype=p.dtype)
        norm = torch.zeros(1, batch, self.cfg.input_dim + 2, device=p.device, dtype=torch.float32)
        return State(zeros, zeros.clone(), norm)

    def forward(
        self, features: torch.Tensor, state: State | None = None, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """features [batch, steps * stack, input_dim] -> log_probs [batch, steps, n_tokens], new state.

        `lengths` (in steps) lets streams with fewer ready steps share a call: their state stops at
        their own last step.
        """
        b, t, f = features.shape
        x = (features - self.feature_mean) / self.feature_std
        x = x.reshape(b, t // self.cfg.stack, self.cfg.stack, f)
        h, c, norm = self.initial_state(b) if state is None else state
        lead = None
        if self.cfg.cmn_steps:
            energy = features.reshape(b, t // self.cfg.stack, self.cfg.stack * f).mean(-1)
            if self.cfg.idle_lead_in:
                lead = lead_in_steps(energy, norm, self.cfg)
            x, norm = running_mean_normalise(x, energy, norm, lengths, self.cfg)
        x = x.reshape(b, t // self.cfg.stack, f * self.cfg.stack)
        if lead is None or not bool(lead.any()):
            y, h, c = self._lstm(x, h, c, lengths)
            return self.output(y).log_softmax(-1), State(h, c, norm)
        y, h, c = self._lstm_after(x, h, c, lengths, lead)
        quiet = (torch.arange(y.shape[1], device=y.device)[None, :] < lead.to(y.device)[:, None])[:, :, None]
        return self.output(y).log_softmax(-1).masked_fill(quiet, LEAD_IN_LOG_PROB).masked_fill(
            quiet & (torch.arange(self.cfg.n_tokens, device=y.device) == BLANK_INDEX), 0.0), State(h, c, norm)

    def _lstm_after(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, lengths: torch.Tensor | None,
                    lead: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The LSTM over each stream's steps from its `lead`-th on (the earlier ones leave its state as it is; their
        outputs are overwritten): the steps are moved to the front, run as shorter streams, and moved back."""
        b, steps, _ = x.shape
        at = torch.arange(steps, device=x.device)[None, :]
        lead = lead.to(x.device)
        total = lengths.to(x.device) if lengths is not None else torch.full((b,), steps, device=x.device)
        lead = torch.minimum(lead, total)
        moved = x.gather(1, (at + lead[:, None]).clamp(max=steps - 1)[:, :, None].expand_as(x))
        if lengths is None and torch.is_grad_enabled():
            # Training: one plain call (a unidirectional LSTM's padding cannot reach the outputs before it, and the
            # state after the call is not used). Packed, its backward was 10x the step's compute on this CPU.
            y, (h, c) = self.lstm(moved, (h, c))
        else:
            y, h, c = self._lstm(moved, h, c, total - lead)
        return y.gather(1, (at - lead[:, None]).clamp(min=0)[:, :, None].expand_as(y)), h, c

    def _lstm(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """The LSTM over streams of `lengths` steps (None: all of x), each one's state stopped at its own last step."""
        if lengths is not None and not bool(lengths.all()):  # streams of no step here keep their state as it is
            going = lengths.nonzero().squeeze(1)
            y = x.new_zeros(x.shape[0], x.shape[1], self.cfg.hidden)
            h, c = h.clone(), c.clone()
            if len(going):
                y[going], h[:, going], c[:, going] = self._lstm(x[going], h[:, going], c[:, going], lengths[going])
            return y, h, c
        steps = lengths.tolist() if lengths is not None else []
        distinct = sorted(set(steps))
        if len(distinct) <= 1 and (not steps or steps[0] == x.shape[1]):
            y, (h, c) = self.lstm(x, (h, c))
            return y, h, c
        if len(distinct) > RAGGED_CALLS or torch.is_grad_enabled():  # (training's batches: every length differs)
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            y, (h, c) = self.lstm(packed, (h, c))
            y, _ = pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])
            return y, h, c
        # A few lengths (live streams: 500 ms chunks are 16 or 17 steps): one plain call per length, each over the
        # streams still going. A packed call cost 7.5 ms at 23 streams x 17 steps here, two plain calls 5.9, one 4.0.
        y = x.new_zeros(x.shape[0], x.shape[1], self.cfg.hidden)
        h, c, start = h.clone(), c.clone(), 0
        for end in distinct:
            if end > start:
                going = (lengths >= end).nonzero().squeeze(1).to(x.device)
                y_part, (h_part, c_part) = self.lstm(x[going, start:end], (h[:, going], c[:, going]))
                y[going, start:end], h[:, going], c[:, going] = y_part, h_part, c_part
            start = end
        return y, h, c

    def flops_per_step(self) -> int:
        """Multiply-adds x 2 of one LSTM step of one stream (gates + output layer)."""
        c = self.cfg
        flops, n_in = 0, c.input_dim * c.stack
        for _ in range(c.layers):
            flops += 2 * 4 * c.hidden * (n_in + c.hidden)
            n_in = c.hidden
        return flops + 2 * c.hidden * c.n_tokens


def lead_in_steps(energy: torch.Tensor, norm: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """[batch] steps of each stream, from this call's first, before its first step above the floor (0 for a stream
    that started before this call; all steps if none is)."""
    floor = cfg.feature_floor + cfg.cmn_floor_db * math.log(10.0) / 10.0
    steps = energy.shape[1]
    loud = energy > floor
    first = torch.where(loud.any(1), loud.float().argmax(1), steps)
    started = norm[0, :, cfg.input_dim] > 0  # the running mean's count: it counts from the first step above the floor
    return torch.where(started.to(first.device), 0, first)


def running_mean_normalise(
    x: torch.Tensor, energy: torch.Tensor, norm: torch.Tensor, lengths: torch.Tensor | None, cfg: ModelConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """x [batch, steps, stack, input_dim] minus its running mean up to each step, and the new `norm` state.

    The mean forgets with a time constant of `cfg.cmn_steps` steps. It starts from `cfg.cmn_prior_steps` steps'
    worth of zeros (the training set's mean), a weight that fades like the data's (count / window = 1 - decay **
    steps counted). With `cmn_gate_db`, steps more than that below the loudest recent step (`energy`, mean log
    power, a peak that falls `cmn_gate_fall_db` a step) are not counted, so a long pause does not pull the mean
    down to the silence. With `cmn_floor_db`, steps within that of digital silence are never counted (the stream
    has not started until one is), so a silent lead-in leaves the mean at the prior. Step by step, so any split
    of a stream into calls gives the same numbers; streams with fewer `lengths` steps keep their state from their
    own last step.
    """
    window, prior = cfg.cmn_steps, cfg.cmn_prior_steps
    decay, db = 1.0 - 1.0 / window, math.log(10.0) / 10.0  # log power in nats per dB
    gate, fall = cfg.cmn_gate_db * db if cfg.cmn_gate_db else math.inf, cfg.cmn_gate_fall_db * db
    floor = cfg.feature_floor + cfg.cmn_floor_db * db if cfg.cmn_floor_db else -math.inf
    n = x.shape[-1]
    total, count, peak = norm[0, :, :n], norm[0, :, n : n + 1], norm[0, :, n + 1 :]
    steps = x.shape[1]
    live = torch.ones(x.shape[0], steps, dtype=torch.bool, device=x.device)
    if lengths is not None:
        live = torch.arange(steps, device=x.device)[None, :] < lengths.to(x.device)[:, None]
    if not steps:
        return x, norm
    step_means, energy = x.float().mean(2), energy.float()  # [batch, steps, input_dim], [batch, steps]
    # Only the recurrence is stepped; what each step needs is cut beforehand and the means are taken after, so a
    # step is 14 small ops, not 24 (every tick steps them: 1.4-2.3 -> 1.0 ms a call of 23 streams x 17 steps here).
    above = (live & (energy > floor))[:, :, None].unbind(1)
    totals, counts = [], []
    for e, alive, ok, step_mean in zip(energy[:, :, None].unbind(1), live[:, :, None].unbind(1), above, step_means.unbind(1)):
        # A stream's first step above the floor is its peak and counted, so count > 0 from then on says it has
        # started; until then the peak is the current step.
        peak = torch.where(alive, torch.where(count > 0, torch.maximum(e, peak - fall), e), peak)
        counted = ok & (e > peak - gate)
        total = torch.where(counted, decay * total + step_mean, total)
        count = torch.where(counted, decay * count + 1.0, count)
        totals.append(total)
        counts.append(count)
    counted_steps = torch.stack(counts, 1)
    mean = torch.stack(totals, 1) / (counted_steps + prior * (1.0 - counted_steps / window))
    return x - mean[:, :, None, :].to(x.dtype), torch.cat([total, count, peak], -1)[None]
