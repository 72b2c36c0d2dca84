"""The acoustic model: frame stacking, a unidirectional LSTM and a CTC output layer.

The recurrent state is explicit (`forward(x, state) -> (log_probs, state)`), so one model serves any
number of streams: a caller keeps each stream's (h, c) and batches streams by stacking their states.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each [layers, batch, hidden]


@dataclass(frozen=True)
class ModelConfig:
    n_mels: int = 40
    stack: int = 3  # frames per LSTM step: 3 x 10 ms -> 30 ms steps
    hidden: int = 256
    layers: int = 2
    n_tokens: int = 29
    dropout: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


class AcousticModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        # Global feature statistics from training: streaming-safe normalisation, saved with the weights.
        self.register_buffer("feature_mean", torch.zeros(cfg.n_mels))
        self.register_buffer("feature_std", torch.ones(cfg.n_mels))
        self.lstm = nn.LSTM(
            cfg.n_mels * cfg.stack, cfg.hidden, cfg.layers, batch_first=True, dropout=cfg.dropout if cfg.layers > 1 else 0.0
        )
        self.output = nn.Linear(cfg.hidden, cfg.n_tokens)

    def initial_state(self, batch: int = 1) -> State:
        p = next(self.parameters())
        zeros = torch.zeros(self.cfg.layers, batch, self.cfg.hidden, device=p.device, dtype=p.dtype)
        return zeros, zeros.clone()

    def forward(
        self, features: torch.Tensor, state: State | None = None, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """features [batch, steps * stack, n_mels] -> log_probs [batch, steps, n_tokens], new state.

        `lengths` (in steps) lets streams with fewer ready steps share a call: their state stops at
        their own last step.
        """
        b, t, f = features.shape
        x = (features - self.feature_mean) / self.feature_std
        x = x.reshape(b, t // self.cfg.stack, f * self.cfg.stack)
        if state is None:
            state = self.initial_state(b)
        if lengths is None or bool((lengths == x.shape[1]).all()):
            y, state = self.lstm(x, state)
        else:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            y, state = self.lstm(packed, state)
            y, _ = pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])
        return self.output(y).log_softmax(-1), state

    def flops_per_step(self) -> int:
        """Multiply-adds x 2 of one LSTM step of one stream (gates + output layer)."""
        c = self.cfg
        flops, n_in = 0, c.n_mels * c.stack
        for _ in range(c.layers):
            flops += 2 * 4 * c.hidden * (n_in + c.hidden)
            n_in = c.hidden
        return flops + 2 * c.hidden * c.n_tokens
