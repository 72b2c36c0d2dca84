"""A tick as one `concurrent.futures.Future`, however many parts its pipeline splits it into.

A pipeline's `submit` returns a Future of the tick's updates; a tick whose work is done in parts (one per
decoder actor on Ray, one per child process) is the `merged` Future of its parts' Futures.

Invariant: a merged Future completes exactly once: with the parts' updates merged in the parts' order once
every part has succeeded, or with the first failure among them as soon as it is known (a lost worker's error
then reaches `Pipeline.restart` without waiting for the parts that will never answer).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


def completed(value: T) -> Future[T]:
    """A Future already done with `value` (the in-process pipeline's ticks are done when submitted)."""
    future: Future[T] = Future()
    future.set_result(value)
    return future


def merged(parts: list[Future[dict]]) -> Future[dict]:
    """One Future of the parts' dicts merged (see the module's invariant)."""
    if len(parts) <= 1:
        return parts[0] if parts else completed({})
    out: Future[dict] = Future()
    out.parts = parts  # type: ignore[attr-defined]  # keeps them alive with the tick (a Ray part holds its ObjectRef)
    lock = threading.Lock()
    left = [len(parts)]

    def on_done(part: Future[dict]) -> None:
        with lock:  # (parts complete on their own threads: Ray's, or a reader per child process)
            if out.done():
                return
            if (error := part.exception()) is not None:
                out.set_exception(error)
                return
            left[0] -= 1
            if not left[0]:
                result: dict = {}
                for p in parts:
                    result.update(p.result())
                out.set_result(result)

    for part in parts:
        part.add_done_callback(on_done)
    return out
