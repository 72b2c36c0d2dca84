"""One-file checkpoints: weights plus everything needed to reproduce the recognizer's input and output."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import one_line
from .frontend import DEFAULT_FRONT_END, Extractor, extractor_class, make_extractor
from .model import AcousticModel, ModelConfig
from .tokens import Tokenizer

FORMAT = "rnnstream-checkpoint"
# 2: the model's input size is `input_dim` (was `n_mels`, an audio name that the pen model carried as its 11 values).
# Older versions load through `_migrate`; a newer one than this code reads is refused.
VERSION = 2
BUNDLED_DIR = Path(__file__).parent / "bundled"
DEFAULT_MODEL = "digits"


class CheckpointError(ValueError):
    """A file that is not a usable rnnstream checkpoint."""


@dataclass
class Checkpoint:
    model: AcousticModel
    features: Any  # the front end's config: FeatureConfig for "logmel" audio, PenConfig for "pen" ink
    tokenizer: Tokenizer
    meta: dict = field(default_factory=dict)  # training recipe, data, metrics: free-form
    frontend: str = DEFAULT_FRONT_END  # the front end that makes the model's frames (models.frontend)

    def extractor(self) -> Extractor:
        """The model's front end, from the config this checkpoint saved."""
        return make_extractor(self.frontend, self.features, self.model.cfg.stack)


def _payload(ckpt: Checkpoint) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "model_config": ckpt.model.cfg.to_dict(),
        "frontend": ckpt.frontend,
        "feature_config": ckpt.features.to_dict(),
        "tokens": ckpt.tokenizer.tokens,
        "state_dict": {k: v.detach().cpu() for k, v in ckpt.model.state_dict().items()},
        "meta": json.loads(json.dumps(ckpt.meta, default=str)),  # plain types: loadable with weights_only
    }


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> None:
    payload = _payload(ckpt)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # a crash mid-save never leaves a half-written checkpoint


def resolve_model(name_or_path: str | Path) -> Path:
    """A bundled model's name ('digits') or a path to a checkpoint file."""
    path = Path(name_or_path)
    if path.suffix != ".pt" and "/" not in str(name_or_path):
        bundled = BUNDLED_DIR / f"{name_or_path}.pt"
        if bundled.exists():
            return bundled
        names = sorted(p.stem for p in BUNDLED_DIR.glob("*.pt"))
        if not path.exists():
            raise CheckpointError(f"no bundled model {str(name_or_path)!r} (bundled: {', '.join(names) or 'none'})")
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    return path


def checkpoint_bytes(ckpt: Checkpoint) -> bytes:
    """The checkpoint file's bytes, for a worker process or node that has the code but not the file."""
    buffer = io.BytesIO()
    torch.save(_payload(ckpt), buffer)
    return buffer.getvalue()


def _migrate(payload: dict) -> dict:
    """An older version's payload as the current version's (the file itself is not rewritten)."""
    if payload["version"] < 2:
        model_config = dict(payload["model_config"])
        model_config["input_dim"] = model_config.pop("n_mels")
        payload = {**payload, "model_config": model_config, "version": 2}
    return payload


def load_checkpoint(name_or_path: str | Path | bytes, device: str | torch.device = "cpu") -> Checkpoint:
    """A bundled model's name, a checkpoint file, or a checkpoint's bytes (`checkpoint_bytes`)."""
    if isinstance(name_or_path, bytes):
        path, source = "checkpoint bytes", io.BytesIO(name_or_path)
    else:
        path = source = resolve_model(name_or_path)
    try:
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({one_line(e)[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an rnnstream checkpoint")
    version = payload.get("version")
    if not isinstance(version, int) or not 1 <= version <= VERSION:
        raise CheckpointError(f"{path}: checkpoint version {version}, this rnnstream reads 1 to {VERSION}")
    try:
        payload = _migrate(payload)
        tokenizer = Tokenizer(payload["tokens"])
        model = AcousticModel(ModelConfig(**payload["model_config"]))
        model.load_state_dict(payload["state_dict"])
        frontend = payload.get("frontend", DEFAULT_FRONT_END)
        features = extractor_class(frontend).Config(**payload["feature_config"])
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path}: inconsistent checkpoint ({one_line(e)[:200]})") from None
    model.eval().to(device)
    return Checkpoint(model, features, tokenizer, payload.get("meta", {}), frontend)
