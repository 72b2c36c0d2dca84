"""The corpora users bring (tools/corpora.py): each reader on a miniature tree in its corpus's layout, built here from
the shared FSDD and ARCTIC recordings; the right split, speakers and text, one real training batch through
tools/data.py, and each config the training loads."""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from conftest import DATA, FSDD, REPO

from models.features import LogMel
from models.model import AcousticModel
from tools.corpora import SOURCES, main, row_audio, write_heldout
from tools.corpus_index import spell
from tools.data import BatchStream, make_source
from tools.digits_data import DIGIT_WORDS
from tools.train import DataConfig, _configs, _dataclass, augment_config, ctc_loss, load_config, train_config

ARCTIC = DATA / "arctic-cathy"
FSDD_SPEAKERS = ["george", "jackson", "lucas", "nicolas", "yweweler"]
CONFIGS = {"speech_commands": "digits_speech_commands.yaml", "librispeech": "speech_librispeech.yaml",
           "common_voice": "digits_common_voice.yaml", "audiomnist": "digits_audiomnist.yaml", "nemo": "digits_nemo.yaml"}


def sc_id(speaker: str) -> str:
    """A Speech Commands speaker id (8 hex digits) for an FSDD speaker."""
    return hashlib.sha1(speaker.encode()).hexdigest()[:8]


def fsdd_clip(digit: int, speaker: str, take: int, rate: int, pad_s: float | None = None) -> np.ndarray:
    audio, sr = sf.read(FSDD / f"{digit}_{speaker}_{take}.wav", dtype="float32")
    audio = soxr.resample(audio, sr, rate)
    return np.pad(audio, (0, max(0, int(pad_s * rate) - len(audio))))[: int(pad_s * rate)] if pad_s else audio


def arctic_rows(n: int) -> list[dict]:
    return [json.loads(line) for line in (ARCTIC / "manifest.jsonl").read_text().splitlines()[:n]]


@pytest.fixture(scope="module")
def speech_commands_tree(tmp_path_factory) -> Path:
    """Two takes of each digit by five speakers, as 1 s 16 kHz clips; lucas in the validation list, jackson in the
    testing list; a non-digit word; two background noise recordings."""
    root = tmp_path_factory.mktemp("speech_commands")
    listed = {"validation": [], "testing": []}
    for speaker in FSDD_SPEAKERS:
        for digit, word in enumerate(DIGIT_WORDS):
            (root / word).mkdir(exist_ok=True)
            for take in range(2):
                name = f"{word}/{sc_id(speaker)}_nohash_{take}.wav"
                sf.write(root / name, fsdd_clip(digit, speaker, take, 16000, 1.0), 16000, subtype="PCM_16")
                listed.setdefault({"lucas": "validation", "jackson": "testing"}.get(speaker, "train"), []).append(name)
    (root / "marvin").mkdir()
    sf.write(root / "marvin" / f"{sc_id('george')}_nohash_0.wav", fsdd_clip(5, "george", 9, 16000, 1.0), 16000)
    for name in ("validation", "testing"):
        (root / f"{name}_list.txt").write_text("\n".join(listed[name]) + "\n")
    (root / "_background_noise_").mkdir()
    rng = np.random.default_rng(0)
    for name in ("white_noise.wav", "running_tap.wav"):
        sf.write(root / "_background_noise_" / name, 0.05 * rng.standard_normal(4 * 16000).astype(np.float32), 16000)
    return root


@pytest.fixture(scope="module")
def librispeech_tree(tmp_path_factory) -> Path:
    """Readers 19 and 26, one chapter each, three ARCTIC utterances each (FLAC), LibriSpeech's upper-case text; one
    line with a numeral."""
    root = tmp_path_factory.mktemp("librispeech") / "train-clean-100"
    rows = arctic_rows(6)
    for r, (reader, chapter) in enumerate([("19", "198"), ("26", "495")]):
        folder = root / reader / chapter
        folder.mkdir(parents=True)
        lines = []
        for i, row in enumerate(rows[3 * r : 3 * r + 3]):
            uid = f"{reader}-{chapter}-{i:04d}"
            (folder / f"{uid}.flac").write_bytes((ARCTIC / row["audio"]).read_bytes())
            lines.append(f"{uid} {row['text'].upper().replace(',', '').replace('.', '')}")
        if reader == "26":
            lines[-1] = lines[-1].split(" ")[0] + " CHAPTER 11"
        (folder / f"{reader}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return root


CV_HEADER = "client_id\tpath\tsentence_id\tsentence\tsentence_domain\tup_votes\tdown_votes\tage\tgender\taccents\tvariant\tlocale\tsegment"


@pytest.fixture(scope="module")
def common_voice_tree(tmp_path_factory) -> Path:
    """MP3 clips at 48 kHz; train.tsv: contributor "a" reads sentences (typographic quotes, an accent, a numeral,
    Cyrillic) and "b" reads every digit; dev.tsv: contributor "c"."""
    root = tmp_path_factory.mktemp("cv-corpus") / "en"
    (root / "clips").mkdir(parents=True)
    arctic = arctic_rows(4)

    def clip(name: str, audio: np.ndarray, rate: int) -> str:
        sf.write(root / "clips" / name, soxr.resample(audio, rate, 48000), 48000, format="MP3")
        return name

    def arctic_clip(i: int) -> str:
        audio, sr = sf.read(ARCTIC / arctic[i]["audio"], dtype="float32")
        return clip(f"common_voice_en_{i}.mp3", audio, sr)

    sentences = ["Don’t “panic”, Philip.", "Café au lait—please!", "Call 911 now.", "Привет, мир."]
    train = [("a", arctic_clip(i), s) for i, s in enumerate(sentences)]
    train += [("b", clip(f"common_voice_en_d{d}.mp3", fsdd_clip(d, "nicolas", 0, 8000), 8000), DIGIT_WORDS[d].capitalize())
              for d in range(10)]
    dev = [("c", clip("common_voice_en_dev.mp3", fsdd_clip(3, "lucas", 0, 8000), 8000), "Three")]
    for split, rows in (("train", train), ("dev", dev), ("validated", train + dev)):
        lines = [f"{c}\t{p}\tid{i}\t{s}\t\t2\t0\t\t\t\t\ten\t" for i, (c, p, s) in enumerate(rows)]
        (root / f"{split}.tsv").write_text("\n".join([CV_HEADER, *lines]) + "\n")
    return root


@pytest.fixture(scope="module")
def audiomnist_tree(tmp_path_factory) -> Path:
    """data/01..03 (george, lucas, nicolas), two takes of each digit at 48 kHz, and the metadata file."""
    root = tmp_path_factory.mktemp("AudioMNIST")
    meta = {}
    for n, speaker in enumerate(["george", "lucas", "nicolas"], 1):
        folder = root / "data" / f"{n:02d}"
        folder.mkdir(parents=True)
        for digit in range(10):
            for take in range(2):
                sf.write(folder / f"{digit}_{n:02d}_{take}.wav", fsdd_clip(digit, speaker, take, 48000), 48000)
        meta[f"{n:02d}"] = {"accent": "german", "age": str(20 + n), "gender": "male", "native speaker": "no"}
    (root / "data" / "audioMNIST_meta.txt").write_text(json.dumps(meta, indent=4))
    return root


@pytest.fixture(scope="module")
def nemo_manifest(tmp_path_factory) -> Path:
    """Relative, absolute and parent-relative paths; a 40 s row; a 1 s segment at 0.5 s, one of 0.5 s at 0; a numeral."""
    root = tmp_path_factory.mktemp("nemo")
    (root / "manifests").mkdir()
    (root / "audio").mkdir()
    items = []
    for i, row in enumerate(arctic_rows(4)):
        path = root / "audio" / f"{i}.flac"
        path.write_bytes((ARCTIC / row["audio"]).read_bytes())
        audio = str(path) if i == 1 else f"../audio/{i}.flac"
        items.append({"audio_filepath": audio, "duration": row["duration"], "text": row["text"], "speaker": "cathy"})
    items[2]["duration"] = 40.0
    items.append({"audio_filepath": "../audio/3.flac", "offset": 0.5, "duration": 1.0, "text": "of the danger"})
    items.append({"audio_filepath": "../audio/3.flac", "offset": 0, "duration": 0.5, "text": "the first half second"})
    items.append({"audio_filepath": "../audio/0.flac", "duration": 3.3, "text": "route 66"})
    manifest = root / "manifests" / "train_manifest.json"
    manifest.write_text("".join(json.dumps(item) + "\n" for item in items))
    return manifest


def test_spelling_keeps_what_is_said_and_drops_what_would_be_lost():
    assert spell("Don’t “panic”, Philip.") == "don't panic philip"
    assert spell("Café au lait—please!") == "cafe au lait please"
    assert spell("AUTHOR OF THE DANGER TRAIL") == "author of the danger trail"
    for lost in ("Call 911 now.", "Tom & Jerry", "50% off", "Привет, мир.", "£5", "...", ""):
        assert spell(lost) is None, lost


def test_speech_commands_splits_by_its_lists(speech_commands_tree, capsys):
    rows = {split: make_source({"type": "speech_commands", "root": str(speech_commands_tree), "split": split}).rows
            for split in ("train", "validation", "testing")}
    assert {r.speaker for r in rows["train"]} == {sc_id(s) for s in ("george", "nicolas", "yweweler")}
    assert {r.speaker for r in rows["validation"]} == {sc_id("lucas")}
    assert {r.speaker for r in rows["testing"]} == {sc_id("jackson")}
    assert [len(rows[s]) for s in rows] == [60, 20, 20]  # digits only: marvin is not a digit
    listed = set((speech_commands_tree / "validation_list.txt").read_text().split())
    assert not {str(Path(r.audio).relative_to(speech_commands_tree)) for r in rows["train"]} & listed
    assert all(Path(r.audio).parent.name == r.text for split in rows.values() for r in split)
    assert "60 utterances kept, 0 dropped" in capsys.readouterr().err
    every = make_source({"type": "speech_commands", "root": str(speech_commands_tree), "words": "all"}).rows
    assert len(every) == 61 and "marvin" in {r.text for r in every}
    held = make_source({"type": "speech_commands", "root": str(speech_commands_tree), "exclude_speakers": [sc_id("george")]})
    assert len(held.rows) == 40


def test_speech_commands_connected_strings_and_background(speech_commands_tree):
    rng = np.random.default_rng(3)
    connected = make_source({"type": "speech_commands", "root": str(speech_commands_tree), "mode": "connected",
                             "min_digits": 4, "max_digits": 4})
    assert {c.speaker for c in connected.clips} == {sc_id(s) for s in ("george", "nicolas", "yweweler")}
    audio, text = connected.sample(rng, 16000)
    assert len(text.split()) == 4 and set(text.split()) <= set(DIGIT_WORDS) and len(audio) > 4 * 0.2 * 16000
    noise = make_source({"type": "speech_commands", "root": str(speech_commands_tree), "mode": "background"})
    for _ in range(5):
        audio, text = noise.sample(rng, 16000)
        assert text == "" and 16000 <= len(audio) <= 3 * 16000 and audio.std() > 0.01


def test_speech_commands_heldout_manifests(speech_commands_tree, tmp_path):
    main(["speech_commands", str(speech_commands_tree), "--split", "validation", "--out", str(tmp_path / "iso")])
    rows = [json.loads(line) for line in (tmp_path / "iso" / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and {r["speaker"] for r in rows} == {sc_id("lucas")} and all(Path(r["audio"]).is_file() for r in rows)
    manifest = write_heldout("speech_commands", str(speech_commands_tree), tmp_path / "strings", split="validation", connected=3)
    strings = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(strings) == 3 and all(r["speaker"] == sc_id("lucas") for r in strings)
    assert all((manifest.parent / r["audio"]).is_file() for r in strings)


def test_speech_commands_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"validation_list\.txt: missing"):
        make_source({"type": "speech_commands", "root": str(tmp_path)})
    with pytest.raises(SystemExit, match=r"^rnnstream: error: .*validation_list\.txt: missing"):
        main(["speech_commands", str(tmp_path), "--out", str(tmp_path / "out")])


def test_librispeech_reads_transcripts_and_drops_numerals(librispeech_tree, capsys):
    source = make_source({"type": "librispeech", "root": str(librispeech_tree)})
    assert len(source.rows) == 5 and {r.speaker for r in source.rows} == {"19", "26"}
    assert source.rows[0].text == "author of the danger trail philip steels etc"
    err = capsys.readouterr().err
    assert "5 utterances kept, 1 dropped (texts that cannot be spelt: 1, e.g. 'CHAPTER 11')" in err
    audio, text = source.sample(np.random.default_rng(0), 16000)
    assert audio.dtype == np.float32 and len(audio) > 16000 and text in {r.text for r in source.rows}
    assert {r.speaker for r in make_source({"type": "librispeech", "root": str(librispeech_tree),
                                            "exclude_speakers": [19]}).rows} == {"26"}


def test_common_voice_reads_tsv_mp3_and_words(common_voice_tree, capsys):
    source = make_source({"type": "common_voice", "root": str(common_voice_tree)})
    texts = {r.text for r in source.rows}
    assert {"don't panic philip", "cafe au lait please", "zero", "nine"} <= texts and len(source.rows) == 12
    assert "sentences that cannot be spelt: 2, e.g. 'Call 911 now.'" in capsys.readouterr().err
    audio = row_audio(next(r for r in source.rows if r.text == "don't panic philip"), 16000)  # MP3, 48 kHz -> 16 kHz
    assert abs(len(audio) / 16000 - arctic_rows(1)[0]["duration"]) < 0.1 and np.abs(audio).max() > 0.05
    digits = make_source({"type": "common_voice", "root": str(common_voice_tree), "words": "digits"})
    assert sorted(r.text for r in digits.rows) == sorted(DIGIT_WORDS) and {r.speaker for r in digits.rows} == {"b"}
    dev = make_source({"type": "common_voice", "root": str(common_voice_tree), "split": "dev"})
    assert [(r.speaker, r.text) for r in dev.rows] == [("c", "three")]
    connected = make_source({"type": "common_voice", "root": str(common_voice_tree), "mode": "connected"})
    assert set(connected.sample(np.random.default_rng(2), 16000)[1].split()) <= set(DIGIT_WORDS)


def test_audiomnist_speakers_meta_and_connected(audiomnist_tree, tmp_path):
    source = make_source({"type": "audiomnist", "root": str(audiomnist_tree)})
    assert len(source.rows) == 60 and {r.speaker for r in source.rows} == {"01", "02", "03"}
    assert all(r.text == DIGIT_WORDS[int(Path(r.audio).name[0])] for r in source.rows)
    held = make_source({"type": "audiomnist", "root": str(audiomnist_tree), "exclude_speakers": [1, "02"]})  # YAML's 01 is 1
    assert {r.speaker for r in held.rows} == {"03"}
    _, text = make_source({"type": "audiomnist", "root": str(audiomnist_tree), "mode": "connected"}).sample(
        np.random.default_rng(0), 16000)
    assert text and set(text.split()) <= set(DIGIT_WORDS)
    manifest = write_heldout("audiomnist", str(audiomnist_tree), tmp_path, speakers=["02"])
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(rows) == 20 and rows[0]["gender"] == "male" and rows[0]["age"] == "22"


def test_nemo_manifest_paths_durations_segments(nemo_manifest, capsys):
    source = make_source({"type": "nemo", "path": str(nemo_manifest)})
    assert len(source.rows) == 5  # the 40 s row left out, the numeral dropped
    assert "(texts that cannot be spelt: 1, e.g. 'route 66')" in capsys.readouterr().err
    assert all(Path(r.audio).is_file() for r in source.rows)
    segment = next(r for r in source.rows if r.offset)
    whole, _ = sf.read(segment.audio, dtype="float32")
    cut = row_audio(segment, 16000)
    assert len(cut) == 16000 and np.allclose(cut, whole[8000:24000], atol=1e-6)
    first = next(r for r in source.rows if r.segment and not r.offset)  # an offset of 0 is a segment too
    assert len(row_audio(first, 16000)) == 8000
    with pytest.raises(ValueError, match=r"bad\.json:1: not a JSON object"):
        bad = nemo_manifest.with_name("bad.json")
        bad.write_text('{"audio": "x.wav", "text": "hi"}\n')
        make_source({"type": "nemo", "path": str(bad)})


def test_every_reader_feeds_a_training_batch(speech_commands_tree, librispeech_tree, common_voice_tree, audiomnist_tree,
                                             nemo_manifest):
    fcfg, tokenizer, mcfg = _configs(load_config(REPO / "configs" / "tiny.yaml"))
    sc = str(speech_commands_tree)
    specs = [{"type": "speech_commands", "root": sc}, {"type": "speech_commands", "root": sc, "mode": "connected"},
             {"type": "speech_commands", "root": sc, "mode": "background"},
             {"type": "librispeech", "root": str(librispeech_tree)}, {"type": "common_voice", "root": str(common_voice_tree)},
             {"type": "audiomnist", "root": str(audiomnist_tree), "mode": "connected"},
             {"type": "nemo", "path": str(nemo_manifest)}]
    augment = augment_config(load_config(REPO / "configs" / "digits_so762.yaml"))
    stream = BatchStream(specs, LogMel(fcfg), tokenizer, batch_size=14, seed=0, augment=augment)
    batch = stream.batch(0)
    assert batch.features.shape[0] == 14 and batch.target_lengths.sum() == len(batch.targets)
    assert [tokenizer.decode(t.tolist()) for t in batch.targets.split(batch.target_lengths.tolist())] == batch.texts
    model = AcousticModel(mcfg)
    loss = ctc_loss(model, batch, torch.device("cpu"), None, amp=False)
    loss.backward()
    assert math.isfinite(loss.item()) and loss.item() > 0
    # Background noise teaches "nothing said": an all-empty batch is a finite loss too.
    silence = BatchStream(specs[2:3], LogMel(fcfg), tokenizer, batch_size=3, seed=0, augment=None).batch(0)
    assert silence.texts == ["", "", ""] and math.isfinite(ctc_loss(model, silence, torch.device("cpu"), None, False).item())


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_each_config_loads_and_runs_on_one_path(kind, request, tmp_path):
    path = REPO / "configs" / CONFIGS[kind]
    cfg = load_config(path)
    _configs(cfg), train_config(cfg), augment_config(cfg), _dataclass(DataConfig, cfg["data"])  # what training loads
    sources = cfg["data"]["train"]
    assert {s["type"] for s in sources} == {kind}
    key = "path" if kind == "nemo" else "root"
    assert len({s[key] for s in sources}) == 1, "one path, given once per source"
    header = "".join(line for line in path.read_text().splitlines(True) if line.startswith("#"))
    assert "ln -sfn /path/to/" in header and sources[0][key] in header  # the one path, said in the header
    for s in sources:
        inspect.signature(SOURCES[kind]).bind(**{k: v for k, v in s.items() if k not in ("type", "weight")})
    tree = {"speech_commands": "speech_commands_tree", "librispeech": "librispeech_tree", "nemo": "nemo_manifest",
            "common_voice": "common_voice_tree", "audiomnist": "audiomnist_tree"}[kind]
    for s in sources:  # the one path pointed at the miniature tree: the config's sources make a batch
        s[key] = str(request.getfixturevalue(tree))
    fcfg, tokenizer, _ = _configs(cfg)
    data = _dataclass(DataConfig, cfg["data"])
    stream = BatchStream(list(data.train), LogMel(fcfg), tokenizer, 4, cfg["seed"], augment_config(cfg), join_p=data.join_p)
    assert stream.batch(0).features.shape[0] == 4
