"""Why the digits model drops digits on the dev phone numbers (issue 26): one probe per suspected cause.

    python -m tools.dev_probe PROBE [PROBE ...] [--model digits] [--manifest ...] [--out runs/h4_probe]

Probes (each prints a summary and writes OUT_<probe>.json with the per-file figures):
    levels     peak / RMS / speech level and a rough SNR per file; WER as-is, at fixed gains, at a fixed speech level
    phase      silent lead-ins that move the speech by part of a 30 ms step, by whole steps, or both
    cmn        the running mean after each lead-in, and ModelConfig copies with other cmn_* settings (the same
               weights: a PROBE, not a model), as-is and after 2.4 s of noise at -50 dBFS
    endpoint   segments per file; WER with the endpointer as shipped, relaxed and off (the same log-probabilities)
    resample   the front end's mono mix + streaming soxr vs an offline soxr downmix to 16 kHz; one channel only
    decoding   greedy, the stored beam, wider, with a word score; what greedy reads where each dropped digit is
    groups     WER by device, gender, rate and channels, first language
    peer       PocketSphinx (digits grammar) on the same files
Readings call the front end, model and back end once on the whole input, which gives the words of a streamed
session (the streaming tests hold them equal; here all 30 as-is and noise lead-in readings matched
tools.leadin's); single-threaded.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from dataclasses import replace
from pathlib import Path

import jiwer
import numpy as np
import soxr
import torch

from models.audio import audio_info, read_blocks
from models.checkpoint import Checkpoint
from models.frontend import extract
from models.model import AcousticModel, State, running_mean_normalise
from stream.backend import BackEnd, EndpointConfig
from stream.session import Recognizer
from tools.data import read_manifest
from tools.leadin import DEV_MANIFEST, VARIANTS, LeadIn
from tools.scoring import normalize_digits, score

RATE = 16000
NOISE_LEAD = LeadIn("noise", 2.4, -50.0)


@functools.lru_cache(maxsize=64)
def audio_of(path: str) -> tuple[np.ndarray, int]:
    """(float32 [n, channels], rate) as the audio front end reads the file; decoded once per process."""
    audio = np.concatenate(list(read_blocks(path, 1 << 24)))
    audio.flags.writeable = False
    return audio, audio_info(path)[0]


def probe_model(recognizer: Recognizer, **cfg_changes) -> Recognizer:
    """The same weights under a ModelConfig with `cfg_changes` (e.g. cmn_prior_steps=100): a probe, not a model."""
    ckpt = recognizer.checkpoint
    model = AcousticModel(replace(ckpt.model.cfg, **cfg_changes))
    model.load_state_dict(ckpt.model.state_dict())
    model.eval()
    return Recognizer(Checkpoint(model, ckpt.features, ckpt.tokenizer, ckpt.meta, ckpt.frontend), recognizer.options)


@torch.no_grad()
def features_of(recognizer: Recognizer, audio: np.ndarray, rate: int) -> torch.Tensor:
    """The model's input frames [steps * stack, dim] for the whole of `audio` (tail padding included)."""
    front = recognizer.extractor.open(rate, audio.shape[1] if audio.ndim == 2 else None)
    return extract(recognizer.extractor, [front], [front.cut(audio, last=True)])[0]


@torch.no_grad()
def log_probs_of(recognizer: Recognizer, audio: np.ndarray, rate: int, prime: bool = False) -> torch.Tensor:
    """[steps, tokens]. `prime`: the running mean starts where a first pass over the same audio left it (an
    oracle of a converged mean; the LSTM starts fresh)."""
    feats = features_of(recognizer, audio, rate)[None]
    state = None
    if prime:
        _, first = recognizer.model(feats)
        fresh = recognizer.model.initial_state()
        state = State(fresh.h, fresh.c, first.norm)
    return recognizer.model(feats, state)[0][0]


def decode(recognizer: Recognizer, log_probs: torch.Tensor, endpoint: EndpointConfig | None = None, **options) -> list:
    """Final events of a back end fed `log_probs` (decoding `options` over the recognizer's)."""
    opts = replace(recognizer.options, **options)
    backend = BackEnd(recognizer.tokenizer, recognizer.step_seconds, opts, endpoint or recognizer.endpoint,
                      recognizer.extractor.tail_steps)
    return [e for e in backend.accept(log_probs) + backend.finish() if e.type == "final"]


def text_of(events: list) -> str:
    return " ".join(e.text for e in events)


def read(recognizer: Recognizer, audio: np.ndarray, rate: int, prime: bool = False, **options) -> str:
    return text_of(decode(recognizer, log_probs_of(recognizer, audio, rate, prime), **options))


def with_lead(audio: np.ndarray, rate: int, lead: LeadIn) -> np.ndarray:
    return np.concatenate([lead.samples(rate, audio.shape[1], 0), audio]) if lead.seconds > 0 else audio


def summary(rows: list[dict], hyps: list[str]) -> dict:
    s = score((r["text"], h) for r, h in zip(rows, hyps))
    return {"wer": round(s["wer"], 4), "sub": s["substitutions"], "del": s["deletions"], "ins": s["insertions"],
            "errors": s["word_errors"], "ser": round(s["ser"], 3)}


def line(name: str, s: dict) -> str:
    same = f"  same as as-is {s['same_words_as_as_is']}" if "same_words_as_as_is" in s else ""
    return (f"  {name:<44} WER {100 * s['wer']:5.1f}%  S/D/I {s['sub']:3d}/{s['del']:3d}/{s['ins']:3d}"
            f"  SER {100 * s['ser']:3.0f}%{same}")


def mono16k(audio: np.ndarray, rate: int) -> np.ndarray:
    mono = audio.mean(axis=1, dtype=np.float32)
    return soxr.resample(mono, rate, RATE, quality="HQ").astype(np.float32) if rate != RATE else mono


def levels(audio: np.ndarray, rate: int) -> dict:
    """Peak and RMS dBFS; speech and background levels from 30 ms frames of the 16 kHz mono mix: frames above the
    midpoint (in dB) of the 10th and 98th percentile frame levels are speech, the quietest 20% are background.
    A rough two-class split (no VAD library in the lock), good to a few dB where the SNR is above ~10 dB."""
    x = mono16k(audio, rate)
    frames = x[: len(x) // 480 * 480].reshape(-1, 480)
    power = (frames.astype(np.float64) ** 2).mean(1) + 1e-12
    db = 10 * np.log10(power)
    lo, hi = np.percentile(db, [10, 98])
    speech, background = power[db > (lo + hi) / 2], power[db <= np.percentile(db, 20)]
    speech_db, noise_db = 10 * np.log10(speech.mean()), 10 * np.log10(background.mean())
    return {"peak_dbfs": round(float(20 * np.log10(np.abs(audio).max() + 1e-12)), 1),
            "rms_dbfs": round(float(10 * np.log10((audio.astype(np.float64) ** 2).mean() + 1e-12)), 1),
            "speech_dbfs": round(float(speech_db), 1), "background_dbfs": round(float(noise_db), 1),
            "snr_db": round(float(speech_db - noise_db), 1), "speech_fraction": round(float(len(speech) / len(db)), 2)}


def probe_levels(rec: Recognizer, rows: list[dict]) -> dict:
    gains, targets = (-30.0, -20.0, -10.0, 6.0), (-20.0, -35.0)
    files, variants = [], {"as-is": [], **{f"gain {g:+g} dB": [] for g in gains},
                           **{f"speech level {t:g} dBFS": [] for t in targets}}
    for row in rows:
        audio, rate = audio_of(row["audio"])
        lv = levels(audio, rate)
        hyp = read(rec, audio, rate)
        variants["as-is"].append(hyp)
        for g in gains:
            variants[f"gain {g:+g} dB"].append(read(rec, audio * np.float32(10 ** (g / 20)), rate))
        for target in targets:
            gain = 10 ** ((target - lv["speech_dbfs"]) / 20)
            variants[f"speech level {target:g} dBFS"].append(read(rec, audio * np.float32(gain), rate))
        files.append({"audio": Path(row["audio"]).name, **lv, **summary([row], [hyp]), "hyp": hyp})
    out = {"files": files, "variants": {k: summary(rows, v) for k, v in variants.items()}}
    errors = np.array([f["wer"] for f in files])
    out["spearman_vs_file_wer"] = {k: round(_spearman(np.array([f[k] for f in files]), errors), 3)
                                   for k in ("peak_dbfs", "rms_dbfs", "speech_dbfs", "background_dbfs", "snr_db")}
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


CMN_PROBES = {"as stored": {}, "prior 100 steps": {"cmn_prior_steps": 100}, "prior 300 steps": {"cmn_prior_steps": 300},
              "window 300 steps": {"cmn_steps": 300}, "window 50 steps": {"cmn_steps": 50},
              "window 30 steps": {"cmn_steps": 30}, "window 30, prior 3": {"cmn_steps": 30, "cmn_prior_steps": 3},
              "gate 10 dB": {"cmn_gate_db": 10.0}, "floor 40 dB": {"cmn_floor_db": 40.0},
              "off (cmn_steps 0)": {"cmn_steps": 0}}


@torch.no_grad()
def cmn_trace(rec: Recognizer, audio: np.ndarray, rate: int) -> np.ndarray:
    """The running mean at every step, [steps, dim], in units of the global feature std."""
    model = rec.model
    feats = features_of(rec, audio, rate)[None]
    b, t, f = feats.shape
    stack = model.cfg.stack
    x = ((feats - model.feature_mean) / model.feature_std).reshape(b, t // stack, stack, f)
    energy = feats.reshape(b, t // stack, stack * f).mean(-1)
    out, _ = running_mean_normalise(x, energy, model.initial_state().norm, None, model.cfg)
    return (x - out)[0, :, 0, :].numpy()


def probe_cmn(rec: Recognizer, rows: list[dict]) -> dict:
    leads, step, at = [v for v in VARIANTS if v.seconds in (0.0, 2.4)], rec.step_seconds, (0.0, 1.0, 3.0, 6.0)
    gaps: dict[str, list[list[float]]] = {lead.name: [] for lead in leads}
    for row in rows:  # how far (RMS over bins, in feature stds) each lead-in's mean is from the as-is mean
        audio, rate = audio_of(row["audio"])
        base = cmn_trace(rec, audio, rate)
        for lead in leads:
            mean = cmn_trace(rec, with_lead(audio, rate, lead), rate)[round(lead.seconds / step):][: len(base)]
            gaps[lead.name].append([float(np.sqrt(((mean[min(round(s / step), len(mean) - 1)]
                                                    - base[min(round(s / step), len(base) - 1)]) ** 2).mean())) for s in at])
    trace = {k: {f"{s:g} s into the file": round(float(np.mean([g[i] for g in v])), 3) for i, s in enumerate(at)}
             for k, v in gaps.items()}
    results = {}
    for name, changes in CMN_PROBES.items():
        probe = probe_model(rec, **changes)
        for lead in (LeadIn(), NOISE_LEAD):
            hyps = [read(probe, with_lead(*audio_of(r["audio"]), lead), audio_of(r["audio"])[1]) for r in rows]
            results[f"{name} | {lead.name}"] = summary(rows, hyps)
    for lead in (LeadIn(), NOISE_LEAD):
        hyps = [read(rec, with_lead(*audio_of(r["audio"]), lead), audio_of(r["audio"])[1], prime=True) for r in rows]
        results[f"primed mean (oracle) | {lead.name}"] = summary(rows, hyps)
    return {"mean_gap_to_as_is": trace, "variants": results}


ENDPOINTS = {
    "as shipped (2.4 / 1.2 / 20 s)": EndpointConfig(),
    "relaxed (6 / 3 / 60 s)": EndpointConfig(silence_without_speech=6.0, silence_after_speech=3.0, max_utterance=60.0),
    "off": EndpointConfig(enabled=False),
}


def probe_endpoint(rec: Recognizer, rows: list[dict]) -> dict:
    variants: dict[str, list[str]] = {k: [] for k in ENDPOINTS}
    files = []
    for row in rows:
        lp = log_probs_of(rec, *audio_of(row["audio"]))
        for name, ep in ENDPOINTS.items():
            events = decode(rec, lp, endpoint=ep)
            variants[name].append(text_of(events))
            if name.startswith("as shipped"):
                files.append({"audio": Path(row["audio"]).name, "segments": [[e.start, e.end, e.text] for e in events]})
    split = sum(len(f["segments"]) > 1 for f in files)
    return {"files_with_several_segments": split, "files": files,
            "variants": {k: summary(rows, v) for k, v in variants.items()}}


def probe_resample(rec: Recognizer, rows: list[dict]) -> dict:
    variants: dict[str, list[str]] = {"front end (as-is)": [], "soxr HQ 16 kHz mono offline": [],
                                      "soxr VHQ 16 kHz mono offline": [], "first channel only": []}
    stereo = []
    for row in rows:
        audio, rate = audio_of(row["audio"])
        variants["front end (as-is)"].append(read(rec, audio, rate))
        mono = audio.mean(axis=1, dtype=np.float32)
        for q in ("HQ", "VHQ"):
            y = soxr.resample(mono, rate, RATE, quality=q).astype(np.float32) if rate != RATE else mono
            variants[f"soxr {q} 16 kHz mono offline"].append(read(rec, y[:, None], RATE))
        variants["first channel only"].append(read(rec, np.ascontiguousarray(audio[:, :1]), rate))
        if audio.shape[1] > 1:
            left, right = audio[:, 0].astype(np.float64), audio[:, 1].astype(np.float64)
            corr = float(np.corrcoef(left, right)[0, 1])
            stereo.append({"audio": Path(row["audio"]).name, "channel_correlation": round(corr, 4),
                           "left_minus_right_db": round(10 * np.log10((left**2).mean() / max((right**2).mean(), 1e-20)), 1)})
    return {"stereo_files": stereo, "variants": {k: summary(rows, v) for k, v in variants.items()}}


def _dropped(ref: str, hyp: str) -> list[int]:
    """Indices of the reference words deleted in `hyp` (normalised, "oh" = "zero")."""
    r, h = normalize_digits(ref), normalize_digits(hyp)
    if not h:
        return list(range(len(r.split())))
    return [i for c in jiwer.process_words(r, h).alignments[0] if c.type == "delete"
            for i in range(c.ref_start_idx, c.ref_end_idx)]


def _greedy_text(rec: Recognizer, ids: list[int]) -> str:
    """Greedy CTC collapse of token ids ('|' for the word boundary)."""
    out = [rec.tokenizer.tokens[k] for k, prev in zip(ids, [0, *ids]) if k != prev and k != 0]
    return "".join(out)


DROP_CLASSES = ("spelt right by greedy", "misspelt letters (greedy)", "no letter but scored (posterior >= 0.1)",
                "never scored")


def probe_decoding(rec: Recognizer, rows: list[dict]) -> dict:
    """Decoders on the same log-probabilities; each digit the stored beam drops, located by forcing the reference
    onto the log-probabilities (torchaudio's CTC forced alignment), classed by what greedy reads in its span."""
    import torchaudio.functional as taf

    beam = rec.options.beam
    decoders = {"greedy": {"beam": 0}, f"beam {beam} (stored)": {}, "beam 32": {"beam": 32},
                f"beam {beam}, word score 2 (probe)": {"word_score": 2.0}}
    variants: dict[str, list[str]] = {k: [] for k in decoders}
    classes, examples = dict.fromkeys(DROP_CLASSES, 0), []
    for row in rows:
        lp = log_probs_of(rec, *audio_of(row["audio"]))
        for name, opts in decoders.items():
            variants[name].append(text_of(decode(rec, lp, **opts)))
        ref_words = normalize_digits(row["text"]).split()
        targets = rec.tokenizer.encode(" ".join(ref_words))
        path, _ = taf.forced_align(lp[None].float(), torch.tensor([targets], dtype=torch.int32), blank=0)
        spans = _word_spans(path[0].tolist(), rec.tokenizer.boundary, len(ref_words))
        letters = 1 - lp.exp()[:, : rec.tokenizer.boundary + 1].sum(-1).numpy()  # mass on letters per step
        greedy = lp.argmax(-1).tolist()
        for i in _dropped(row["text"], variants[f"beam {beam} (stored)"][-1]):
            a, b = spans[i]
            heard = _greedy_text(rec, greedy[a : b + 1]).replace("|", "")
            cls = DROP_CLASSES[0 if ref_words[i] in heard else 1 if heard else 2 if letters[a : b + 1].max() >= 0.1 else 3]
            classes[cls] += 1
            examples.append({"audio": Path(row["audio"]).name, "digit": ref_words[i], "greedy_in_span": heard,
                             "class": cls})
    return {"variants": {k: summary(rows, v) for k, v in variants.items()}, "dropped_digits": classes,
            "examples": examples}


def _word_spans(path: list[int], boundary: int, n_words: int) -> list[tuple[int, int]]:
    """(first, last) step of each word's letters on a forced-alignment path (blank 0, words split by `boundary`)."""
    spans, start, last = [], None, 0
    for t, tok in enumerate(path):
        if tok == boundary and start is not None:
            spans.append((start, last))
            start = None
        elif tok > boundary:
            start, last = (t if start is None else start), t
    if start is not None:
        spans.append((start, last))
    return spans[:n_words]


PHASE_LEADS = (0.01, 0.02, 0.03, 0.09, 0.51, 0.5, 0.99, 1.0, 2.4, 4.98, 5.0)


def probe_phase(rec: Recognizer, rows: list[dict]) -> dict:
    """Silent lead-ins that shift the speech by under a step (10, 20 ms: the 30 ms grid's phase only), by whole
    steps (30 ms ... 4.98 s: the same phase, only the LSTM hears more silence) and by both (0.5, 1, 5 s)."""
    hyps = {"as-is": [read(rec, *audio_of(r["audio"])) for r in rows]}
    for s in PHASE_LEADS:
        lead = LeadIn("silence", s)
        hyps[lead.name + (" (whole steps)" if abs(s / rec.step_seconds - round(s / rec.step_seconds)) < 1e-6 else "")] = [
            read(rec, with_lead(*audio_of(r["audio"]), lead), audio_of(r["audio"])[1]) for r in rows]
    out = {k: {**summary(rows, v), "same_words_as_as_is": sum(a == b for a, b in zip(v, hyps["as-is"]))}
           for k, v in hyps.items()}
    return {"variants": out, "files": [{"audio": Path(r["audio"]).name, **{k: v[i] for k, v in hyps.items()}}
                                       for i, r in enumerate(rows)]}


def probe_groups(rec: Recognizer, rows: list[dict]) -> dict:
    hyps = [read(rec, *audio_of(r["audio"])) for r in rows]
    keys = {"device": lambda r: r["recording_device"], "gender": lambda r: r["gender"],
            "rate and channels": lambda r: f"{r['sample_rate']} Hz x{r['channels']}",
            "first language": lambda r: r["native_language"]}
    out = {}
    for key, of in keys.items():
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            groups.setdefault(of(r), []).append(i)
        out[key] = {g: {"files": len(ix), **summary([rows[i] for i in ix], [hyps[i] for i in ix])}
                    for g, ix in sorted(groups.items())}
    return out


def probe_peer(rec: Recognizer, rows: list[dict]) -> dict:
    import tempfile

    from tools.peer_pocketsphinx import PeerOptions, make_decoder, read_pcm16, recognize

    variants, files = {}, {}
    for name, options in {"PocketSphinx digits grammar": PeerOptions(),
                          "PocketSphinx digits grammar, wip 0.01": PeerOptions(wip=0.01)}.items():
        with tempfile.TemporaryDirectory(prefix="ps_") as tmp:
            decoder = make_decoder(options, Path(tmp))
        hyps = [recognize(decoder, read_pcm16(r["audio"])[0]) for r in rows]
        variants[name], files[name] = summary(rows, hyps), hyps
    return {"variants": variants, "files": files}


PROBES = {"levels": probe_levels, "phase": probe_phase, "cmn": probe_cmn, "endpoint": probe_endpoint, "resample": probe_resample,
          "decoding": probe_decoding, "groups": probe_groups, "peer": probe_peer}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("probes", nargs="+", choices=[*PROBES, "all"])
    p.add_argument("--model", default="digits")
    p.add_argument("--manifest", default=str(DEV_MANIFEST))
    p.add_argument("--first", type=int, help="only the manifest's first N recordings")
    p.add_argument("--out", default="runs/h4_probe", help="prefix of the JSON files written")
    args = p.parse_args(argv)
    if not Path(args.manifest).is_file():
        print(f"rnnstream: error: {args.manifest}: no such manifest", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    rec = Recognizer.load(args.model, device="cpu")
    rows = read_manifest(args.manifest)[: args.first]
    for name in PROBES if "all" in args.probes else args.probes:
        result = PROBES[name](rec, rows)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(f"{args.out}_{name}.json").write_text(json.dumps(result, indent=1))
        print(f"{name}:")
        for k, v in result.get("variants", {}).items():
            print(line(k, v))
        for k, v in result.items():
            if k not in ("variants", "files", "examples"):
                print(f"  {k}: {json.dumps(v)}")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
