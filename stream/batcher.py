"""A sequence batcher: many streams' recurrent states in slots, stepped together in one model call."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

import torch

from models.model import AcousticModel, State


class SlotsFull(RuntimeError):
    """Every state slot is taken: the caller must wait (backpressure) or end a stream."""


class SequenceBatcher:
    """Owns every stream's model state, slots along dimension 1, on the model's device; a stream holds one slot
    from start to end.

    Streams that go quiet for `idle_timeout` seconds are expired so a vanished client cannot hold a
    slot forever; `expire()` says which.
    """

    def __init__(
        self,
        model: AcousticModel,
        slots: int = 64,
        max_slots: int = 4096,
        idle_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.model = model
        self.max_slots = max_slots
        self.idle_timeout = idle_timeout
        self.clock = clock
        self.state: State = model.initial_state(slots)
        self._free = list(range(slots - 1, -1, -1))
        self._slot: dict[Hashable, int] = {}
        self._last_used: dict[Hashable, float] = {}

    def __contains__(self, key: Hashable) -> bool:
        return key in self._slot

    @property
    def active(self) -> int:
        return len(self._slot)

    @property
    def slots(self) -> int:
        return self.state.h.shape[1]

    def start(self, key: Hashable, state: State | None = None) -> None:
        """Give the stream a slot, at the initial state or at `state` (one stream's, from `snapshot`)."""
        if key in self._slot:
            raise KeyError(f"stream {key!r} already started")
        if not self._free:
            self._grow()
        slot = self._free.pop()
        for tensor, saved in zip(self.state, state or [None] * 3):
            tensor[:, slot] = 0 if saved is None else torch.as_tensor(saved[:, 0]).to(tensor.device)
        self._slot[key] = slot
        self._last_used[key] = self.clock()

    def snapshot(self, key: Hashable) -> State:
        """The stream's state as a value: numpy arrays [.., 1, ..] (2 x 256 LSTM: ~4 KB; an array pickles in a
        twentieth of a tensor's time, 10 against 200 us, and snapshots travel through Ray)."""
        slot = self._slot[key]
        return State(*(t[:, slot : slot + 1].cpu().numpy().copy() for t in self.state))

    def end(self, key: Hashable) -> None:
        self._free.append(self._slot.pop(key))
        del self._last_used[key]

    def expire(self) -> list[Hashable]:
        """End and return the streams idle for longer than idle_timeout."""
        if self.idle_timeout is None:
            return []
        now = self.clock()
        idle = [k for k, t in self._last_used.items() if now - t > self.idle_timeout]
        for key in idle:
            self.end(key)
        return idle

    @torch.no_grad()
    def step(self, inputs: dict[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        """{stream: frames [steps * stack, n_mels]} -> {stream: log_probs [steps, n_tokens] on the CPU}."""
        now = self.clock()
        for key in inputs:
            self._last_used[key] = now
        ready = {k: x for k, x in inputs.items() if x.shape[0]}  # (len() of a tensor: 4x the time)
        out = {k: torch.zeros(0, self.model.cfg.n_tokens) for k in inputs if k not in ready}
        if not ready:
            return out
        keys = list(ready)
        stack = self.model.cfg.stack
        steps = [ready[k].shape[0] // stack for k in keys]  # ints: slicing by a tensor element costs ~10x
        lengths = torch.tensor(steps)
        device = self.state.h.device
        x = torch.nn.utils.rnn.pad_sequence([ready[k] for k in keys], batch_first=True).to(device)
        idx = torch.tensor([self._slot[k] for k in keys], device=device)
        log_probs, new_state = self.model(x, self.state.select(idx), lengths)
        for tensor, new in zip(self.state, new_state):
            tensor[:, idx] = new
        log_probs = log_probs.cpu()
        width = log_probs.shape[1]  # most streams fill the call: their row as it is (unbind: 0.4 us a row, a slice 1.2)
        out.update({k: row if n == width else row[:n] for k, row, n in zip(keys, log_probs.unbind(0), steps)})
        return out

    def _grow(self) -> None:
        n = self.slots
        if n >= self.max_slots:
            raise SlotsFull(f"all {n} stream slots are in use")
        extra = min(n, self.max_slots - n)
        self.state = State(*(torch.cat([t, new], 1) for t, new in zip(self.state, self.model.initial_state(extra))))
        self._free.extend(range(n + extra - 1, n - 1, -1))
