"""Shared fixtures: real recordings from ../shared/data and the bundled model."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
FSDD = DATA / "fsdd" / "recordings"
sys.path.insert(0, str(REPO))

os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    if not FSDD.is_dir():
        raise pytest.UsageError(f"the test data is missing: {FSDD} (see ../shared/data/README.md)")


@pytest.fixture(scope="session")
def recognizer():
    import torch

    from stream.session import Recognizer

    torch.set_num_threads(1)
    return Recognizer.load("digits", device="cpu")


@pytest.fixture(scope="session")
def digits_audio() -> tuple[np.ndarray, str]:
    """A real connected-digit utterance (16 kHz float) joined from one FSDD speaker's clips, and its text."""
    from tools.digits_data import connected_utterance, fsdd_clips

    clips = fsdd_clips(FSDD.parent, speakers=["nicolas"])
    return connected_utterance(clips, np.random.default_rng(7), 16000, min_digits=5, max_digits=5)


@pytest.fixture(scope="session")
def digits_wav(tmp_path_factory, digits_audio) -> Path:
    path = tmp_path_factory.mktemp("audio") / "digits.wav"
    sf.write(path, digits_audio[0], 16000, subtype="PCM_16")
    return path


def chunked(x: np.ndarray, sizes: list[int]):
    """Split x into consecutive chunks, cycling through `sizes`."""
    i, k = 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        yield x[i : i + n]
        i, k = i + n, k + 1
