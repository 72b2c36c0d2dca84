"""Rooms and devices in training augmentation (tools/rooms.py, tools/devices.py, tools/augment.py): real recordings,
a real (small) RIR bank simulated by pyroomacoustics, real codecs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.signal

from tests.conftest import DATA
from tools import devices, rooms
from tools.augment import AugmentConfig, augment_audio
from tools.data import load_audio

ARCTIC = DATA / "arctic-cathy" / "manifest.jsonl"
DEV = DATA / "phone-numbers-dev" / "manifest.jsonl"


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    row = json.loads(ARCTIC.read_text().splitlines()[0])
    return load_audio(str(ARCTIC.parent / row["audio"]), 16000)


def _lag(y: np.ndarray, x: np.ndarray) -> int:
    return int(np.argmax(scipy.signal.correlate(y, x, method="fft"))) - (len(x) - 1)


def _decay_time(h: np.ndarray) -> float:
    """T20 x 3 from the Schroeder curve: seconds to fall 60 dB."""
    energy = np.cumsum(h[::-1].astype(np.float64) ** 2)[::-1]
    db = 10 * np.log10(energy / energy[0] + 1e-30)
    return 3 * (np.argmax(db < -25) - np.argmax(db < -5)) / 16000


def test_room_reverberates_with_the_expected_decay_and_keeps_timing():
    h, room = rooms.simulate_rir(2, 1)  # seed 2, room 1: RT60 0.76 s (drawn), 1.6 m away
    assert 0.5 * room["rt60"] < _decay_time(h) < 2 * room["rt60"]
    burst = np.zeros(16000, np.float32)
    burst[2000:3600] = np.random.default_rng(0).standard_normal(1600)
    wet = rooms.reverberate(burst, h)
    assert len(wet) == len(burst) and wet.dtype == np.float32
    assert np.isclose(np.mean(wet**2), np.mean(burst**2), rtol=1e-3)  # level kept
    tail = [np.mean(wet[3600 + a : 3600 + a + 800] ** 2) for a in (0, 1600, 3200)]
    assert tail[0] > tail[1] > tail[2] > 1e-6 * np.mean(burst[2000:3600] ** 2)  # a decaying tail where dry is 0
    # the direct path stays where the sound was: nothing before it but the fractional delay filter's PRE samples
    onset = int(np.argmax(np.abs(wet) > 0.05 * np.abs(wet).max()))
    assert 2000 - rooms.PRE <= onset <= 2002 and np.abs(wet[: 2000 - rooms.PRE]).max() < 1e-4 * np.abs(wet).max()


def test_rir_bank_is_reproducible_from_its_seed(tmp_path):
    a = rooms.rir_bank(str(tmp_path / "a"), 5, 2)
    b = rooms.rir_bank(str(tmp_path / "b"), 5, 2)
    c = rooms.rir_bank(str(tmp_path / "c"), 6, 2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0][:1000], c[0][:1000])


@pytest.mark.parametrize("codec", devices.CODECS)
def test_codec_round_trip_keeps_length_timing_and_level(speech, codec):
    y = devices.codec_trip(speech, codec, np.random.default_rng(1))
    assert y.dtype == np.float32 and len(y) == len(speech)
    assert abs(_lag(y, speech)) <= 2
    assert 0.5 < np.sqrt(np.mean(y**2) / np.mean(speech**2)) < 1.3
    for short in (np.zeros(100, np.float32), speech[:37]):  # shorter than one codec frame
        y = devices.codec_trip(short, codec, np.random.default_rng(1))
        assert len(y) == len(short) and np.all(np.isfinite(y))


def test_device_and_agc_keep_timing_and_a_sane_level(speech):
    rng = np.random.default_rng(2)
    coloured = devices.device_colour(speech, rng)
    assert len(coloured) == len(speech) and np.isclose(np.sqrt(np.mean(coloured**2)), np.sqrt(np.mean(speech**2)), rtol=1e-3)
    quiet = speech * np.float32(0.01)  # -40 dB: the AGC brings it up to speaking level, the compressor caps peaks
    lifted = devices.agc_compress(quiet, rng)
    assert len(lifted) == len(quiet) and np.all(np.isfinite(lifted))
    assert np.abs(lifted).max() <= 1.0 and np.sqrt(np.mean(lifted**2)) > 10 * np.sqrt(np.mean(quiet**2))


def test_babble_never_reads_the_dev_set(tmp_path):
    with pytest.raises(ValueError, match="phone-numbers-dev"):
        rooms.babble_pool(str(tmp_path), (str(DEV),))
    # a manifest elsewhere whose rows point into the dev set is refused too
    row = json.loads(DEV.read_text().splitlines()[0])
    sneaky = tmp_path / "m.jsonl"
    sneaky.write_text(json.dumps({"audio": str(DEV.parent / row["audio"]), "text": row["text"]}) + "\n")
    with pytest.raises(ValueError, match="phone-numbers-dev"):
        rooms.build_babble_pool((str(sneaky),), utterances=1)
    assert not list(tmp_path.glob("babble-*"))


def test_augment_with_everything_on(speech, tmp_path):
    manifest = tmp_path / "babble.jsonl"  # five ARCTIC utterances: a pool built in a second
    rows = [json.loads(line) for line in ARCTIC.read_text().splitlines()[:5]]
    manifest.write_text("".join(json.dumps({**r, "audio": str(ARCTIC.parent / r["audio"])}) + "\n" for r in rows))
    cfg = AugmentConfig(rir_p=1, rir_bank=str(tmp_path), rir_rooms=3, babble_p=1, babble_manifests=(str(manifest),),
                        drift_p=1, device_p=1, agc_p=1, codec_p=1, lead_p=0.5, lead_noise_p=0.5)
    for seed in range(6):  # each codec at least once among six draws of four
        y = augment_audio(speech, 16000, cfg, np.random.default_rng(seed))
        assert y.dtype == np.float32 and np.all(np.isfinite(y))
        assert 0.8 * len(speech) < len(y) < 1.2 * len(speech) + 5 * 16000  # speed 0.9-1.1, lead-ins of at most 2 s
        assert np.abs(y).max() > 1e-4
    with pytest.raises(ValueError, match=r"augment\.babble_manifests"):
        AugmentConfig(babble_p=0.5)
    with pytest.raises(ValueError, match=r"augment\.codecs"):
        AugmentConfig(codecs=("g729",))
