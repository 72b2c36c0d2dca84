"""Rooms for training audio: a seeded bank of simulated room impulse responses, and babble from training speech.

    python -m tools.rooms --build [--rooms 400] [--seed 0] [--out data/rirs]     # ~1 s of one core a room
    python -m tools.rooms --babble data/so762/all.jsonl ../shared/data/arctic-cathy/manifest.jsonl   # ~20 s

Image-source rooms are slow (a 0.8 s RT60 room takes ~9 s by image sources alone), so the bank is simulated once
with pyroomacoustics' hybrid model (image sources to order 3, ray tracing for the tail: ~1 s a room, seeded through
`pyroomacoustics.random.seed`, so the bank is a pure function of its seed) and cached under data/rirs/, as is the
babble pool. Each RIR is
stored from `PRE` samples before its direct path, so convolving and dropping `PRE` samples keeps the speech where it
was (labels do not move). The babble pool is trimmed training utterances at unit RMS, chained into one stream from
which each talker is a window; it never reads the dev phone numbers (`DEV_MARK`).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import itertools
import os
import sys
from pathlib import Path

import librosa
import numpy as np
import scipy.signal

from .digits_data import resolve_path

RATE = 16000
PRE = 16  # samples kept before the direct path (the 81-tap fractional delay filter's main lobe is within +-8)
# Both drawn log-uniformly (medians 0.35 s and 0.95 m): a blind decay figure (the median slope of free decays in 10 ms
# frame levels, as an RT60) reads 0.27 s on the dev phone numbers (IQR 0.25-0.31), 0.25 s on dry training items and
# 0.31 s after rooms of RT60 0.15-0.3 s at any distance, so the dev rooms are small and furnished or the phone close;
# uniform draws (medians 0.47 s, 1.65 m) gave 0.43 s. The long rooms and far talkers stay, less often.
RT60 = (0.15, 0.8)  # seconds: a furnished room to a bare hall
DISTANCE = (0.3, 3.0)  # metres from mouth to microphone: a phone at the ear to a laptop across a table
VERSION = 2  # in the cache's name: a change of these draws must not read an older bank
DEV_MARK = "phone-numbers-dev"  # the dev set's folder: never training material, so never babble
MAX_RIR_S = 1.0


def _room(rng: np.random.Generator) -> tuple[list[float], float, list[float], list[float]]:
    """Dimensions, RT60, source and microphone of one ordinary room (2.5-10 m by 2-8 m, 2.3-3.5 m high)."""
    import pyroomacoustics as pra

    while True:
        dim = [float(rng.uniform(2.5, 10.0)), float(rng.uniform(2.0, 8.0)), float(rng.uniform(2.3, 3.5))]
        rt60 = float(np.exp(rng.uniform(*np.log(RT60))))
        try:
            pra.inverse_sabine(rt60, dim)  # too short an RT60 for a small room needs absorption > 1
        except ValueError:
            continue
        mic = [float(rng.uniform(0.3, d - 0.3)) for d in dim[:2]] + [float(rng.uniform(0.7, 1.6))]
        for _ in range(20):
            dist, angle = float(np.exp(rng.uniform(*np.log(DISTANCE)))), float(rng.uniform(0, 2 * np.pi))
            src = [mic[0] + dist * np.cos(angle), mic[1] + dist * np.sin(angle), float(rng.uniform(1.1, 1.8))]
            if all(0.3 < s < d - 0.3 for s, d in zip(src, dim)):
                return dim, rt60, src, mic


def simulate_rir(seed: int, index: int) -> tuple[np.ndarray, dict]:
    """Room `index` of the bank with seed `seed`: its RIR from PRE samples before the direct path, and its room."""
    import pyroomacoustics as pra

    dim, rt60, src, mic = _room(np.random.default_rng([seed, index]))
    pra.random.seed(int(np.random.default_rng([seed, index, 1]).integers(2**31)))  # the ray tracer's C++ RNG too
    absorption, _ = pra.inverse_sabine(rt60, dim)
    room = pra.ShoeBox(dim, fs=RATE, materials=pra.Material(absorption), max_order=3, ray_tracing=True,
                       air_absorption=True)
    room.add_source(src)
    room.add_microphone(mic)
    room.compute_rir()
    h = np.asarray(room.rir[0][0], dtype=np.float64)
    dist = float(np.linalg.norm(np.subtract(src, mic)))
    direct = round(dist / pra.constants.get("c") * RATE) + pra.constants.get("frac_delay_length") // 2
    lo = max(direct - 4, 0)  # the direct path's peak, within +-4 samples of its geometric delay
    direct = lo + int(np.argmax(np.abs(h[lo : direct + 5])))
    h = h[max(direct - PRE, 0) : direct - PRE + int(MAX_RIR_S * RATE)]
    energy = np.cumsum(h[::-1] ** 2)[::-1]  # Schroeder: cut the tail where it is 60 dB down
    h = h[: max(int(np.searchsorted(-energy, -energy[0] * 1e-6)), PRE + 1)]
    h = h / (np.sqrt(np.sum(h**2)) + 1e-12)
    return h.astype(np.float32), {"dim": dim, "rt60": rt60, "distance": dist}


def bank_path(folder: str | Path, seed: int, rooms: int) -> Path:
    return resolve_path(folder) / f"rirs-v{VERSION}-seed{seed}-n{rooms}.npz"


def build_bank(folder: str | Path, seed: int = 0, rooms: int = 400, log: bool = True) -> Path:
    """Simulate `rooms` rooms and store them as one npz (concatenated RIRs, offsets, RT60s, distances)."""
    path = bank_path(folder, seed, rooms)
    rirs, rt60, dist = [], [], []
    for i in range(rooms):
        h, room = simulate_rir(seed, i)
        rirs.append(h)
        rt60.append(room["rt60"])
        dist.append(room["distance"])
        if log and (i + 1) % 25 == 0:
            print(f"rooms: {i + 1}/{rooms}", file=sys.stderr, flush=True)
    offsets = np.cumsum([0] + [len(h) for h in rirs])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")  # each builder its own file: two runs sharing data/rirs
    np.savez(tmp, rirs=np.concatenate(rirs), offsets=offsets, rt60=np.array(rt60), distance=np.array(dist))
    tmp.replace(path)  # a worker that reads it meanwhile never sees half a file
    return path


@functools.lru_cache(maxsize=4)
def rir_bank(folder: str, seed: int, rooms: int) -> list[np.ndarray]:
    """The bank's RIRs, built on first use (minutes) when no cached file is there."""
    path = bank_path(folder, seed, rooms)
    if not path.exists():
        print(f"rooms: building {path} ({rooms} rooms, ~1 s each; once)", file=sys.stderr, flush=True)
        build_bank(folder, seed, rooms)
    with np.load(path) as z:
        rirs, offsets = z["rirs"], z["offsets"]
    return [rirs[a:b] for a, b in itertools.pairwise(offsets)]


def reverberate(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """`x` in the room of `h`: same length, the direct path where the speech was, the same RMS."""
    if not len(x):
        return x
    y = scipy.signal.oaconvolve(x, h)[PRE : PRE + len(x)]
    return (y * np.sqrt((np.mean(x**2) + 1e-12) / (np.mean(y**2) + 1e-12))).astype(np.float32)


def _check_not_dev(path: str | Path) -> None:
    if DEV_MARK in str(Path(path).resolve()):
        raise ValueError(f"{path}: the dev phone numbers ({DEV_MARK}) are never training material, nor babble")


def _pool_path(folder: str | Path, manifests: tuple[str, ...], seed: int, utterances: int) -> Path:
    key = hashlib.sha1(repr((sorted(str(resolve_path(m).resolve()) for m in manifests), seed, utterances)).encode())
    return resolve_path(folder) / f"babble-{key.hexdigest()[:12]}.npy"


def build_babble_pool(manifests: tuple[str, ...], seed: int = 0, utterances: int = 400) -> np.ndarray:
    """`utterances` drawn from the manifests (seeded), trimmed of silence, each at unit RMS, chained: float16."""
    from .data import load_audio, read_manifest

    rows = []
    for m in manifests:
        _check_not_dev(resolve_path(m))
        rows += read_manifest(resolve_path(m))
    if not rows:
        raise ValueError(f"{', '.join(manifests)}: no utterances for babble")
    rng = np.random.default_rng([seed, 2])
    parts = []
    for i in rng.choice(len(rows), size=min(utterances, len(rows)), replace=False):
        _check_not_dev(rows[i]["audio"])
        x, _ = librosa.effects.trim(load_audio(rows[i]["audio"], RATE), top_db=30)
        if len(x) > RATE // 4:
            parts.append(x / (np.sqrt(np.mean(x**2)) + 1e-9))
    return np.concatenate(parts).astype(np.float16)


@functools.lru_cache(maxsize=2)
def babble_pool(folder: str, manifests: tuple[str, ...], seed: int = 0, utterances: int = 400) -> np.ndarray:
    """The pool, cached in `folder` beside the RIR bank (400 utterances: ~17 min of speech, ~30 MB as float16)."""
    for m in manifests:
        _check_not_dev(resolve_path(m))
    path = _pool_path(folder, manifests, seed, utterances)
    if not path.exists():
        print(f"rooms: building the babble pool {path} (once)", file=sys.stderr, flush=True)
        pool = build_babble_pool(manifests, seed, utterances)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, pool)
        tmp.replace(path)
    return np.load(path, mmap_mode="r")


def babble(n: int, talkers: int, pool: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`talkers` windows of the pool summed: unit RMS, `n` samples."""
    out = np.zeros(n, np.float32)
    if n >= len(pool):
        pool = np.tile(pool, n // len(pool) + 2)
    for start in rng.integers(0, len(pool) - n, size=talkers):
        out += pool[start : start + n]
    return out / (np.sqrt(np.mean(out**2)) + 1e-9)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", action="store_true", help="simulate and cache the RIR bank")
    p.add_argument("--rooms", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="data/rirs", help="the cache folder (AugmentConfig.rir_bank)")
    p.add_argument("--babble", nargs="*", default=[], metavar="MANIFEST", help="build the babble pool of these")
    args = p.parse_args(argv)
    if args.build:
        path = build_bank(args.out, args.seed, args.rooms)
        with np.load(path) as z:
            print(f"{path}: {args.rooms} rooms, RT60 {z['rt60'].min():.2f}-{z['rt60'].max():.2f} s, "
                  f"RIRs {np.diff(z['offsets']).mean() / RATE:.2f} s on average")
    if args.babble:
        pool = babble_pool(args.out, tuple(args.babble), args.seed)
        print(f"babble pool: {len(pool) / RATE / 60:.1f} min of speech")


if __name__ == "__main__":
    main()
