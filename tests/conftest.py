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


class _LocalRay:
    """The bundled digits model in a Ray pipeline (its standby actors warm) on a local Ray of this process, started
    once (~30 s on two busy cores) and shared by the modules that stream through one (test_failover kills its actors:
    the pipeline replaces them). Started again if the Ray it was on is gone (test_cluster leaves any local Ray: its
    driver joins the two-node cluster)."""

    def __init__(self):
        self.rec, self.address = None, None

    def _on_it(self) -> bool:
        import ray

        return self.rec is not None and ray.is_initialized() and ray.get_runtime_context().gcs_address == self.address

    def get(self):
        import ray

        from stream.distributed.session import RayRecognizer

        if not self._on_it():  # (a recognizer on a Ray that is gone is dropped: its actors went with it)
            self.rec = RayRecognizer.connect("digits", device="cpu", num_cpus=2)
            self.address = ray.get_runtime_context().gcs_address
        return self.rec

    def close(self):
        if self._on_it():
            self.rec.close()  # and the Ray it started
        self.rec = None


@pytest.fixture(scope="session")
def _local_ray():
    pytest.importorskip("ray")
    local = _LocalRay()
    yield local
    local.close()


@pytest.fixture(scope="module")
def ray_digits(_local_ray):
    """`RayRecognizer.connect("digits", device="cpu", num_cpus=2)`, shared by the session (see _LocalRay)."""
    return _local_ray.get()


FAST_FAILURE_DETECTION = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_failure_threshold": 3}


@pytest.fixture(scope="module")
def cluster_head():
    """A real Ray head node on this machine, 127.0.0.1, token authentication on (the default token file), node
    failures detected in ~1.5 s; started once for a module (~10 s), its worker nodes come and go with the tests."""
    ray = pytest.importorskip("ray")
    from ray._private.authentication.authentication_token_setup import ensure_token_if_auth_enabled
    from ray._private.utils import get_ray_address_file
    from ray.cluster_utils import Cluster

    from stream.distributed.cluster import enable_token_auth, loopback_only

    enable_token_auth()
    ensure_token_if_auth_enabled(create_token_if_missing=True)  # ~/.ray/auth_token, as for `ray start --head`
    address_file = Path(get_ray_address_file(None))
    previous = address_file.read_text() if address_file.exists() else None
    ray.shutdown()  # a local Ray of a module run before (ray_digits): this process's driver is to join the cluster
    with loopback_only():
        c = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False,
                            "_system_config": FAST_FAILURE_DETECTION},
        )
        try:
            yield c
        finally:
            ray.shutdown()
            c.shutdown()
            if previous is None:  # Cluster advertised itself as this machine's Ray: take that back
                address_file.unlink(missing_ok=True)
            else:
                address_file.write_text(previous)


@pytest.fixture
def cluster(cluster_head):
    """A real two-node Ray on this machine: the module's head node and a fresh worker node, both on 127.0.0.1. The
    test's driver (if it joined) leaves the cluster after it, and the worker goes if the test left it."""
    import ray

    worker = cluster_head.add_node(num_cpus=1, node_ip_address="127.0.0.1")  # (within the head's loopback_only)
    try:
        yield cluster_head, worker
    finally:
        ray.shutdown()
        if worker in cluster_head.worker_nodes:
            cluster_head.remove_node(worker)


def stepped_log_probs(recognizer, audio: np.ndarray, rate: int):
    """The model's log-probabilities for `audio` as a session steps them ([steps, tokens]): real decoder input."""
    import torch

    session = recognizer.session(rate)
    out, step = [], session.pipeline.model.batcher.step

    def recording(inputs):
        result = step(inputs)
        out.extend(result.values())
        return result

    session.pipeline.model.batcher.step = recording
    session.accept(audio)
    session.finish()
    return torch.cat(out)


def chunked(x: np.ndarray, sizes: list[int]):
    """Split x into consecutive chunks, cycling through `sizes`."""
    i, k = 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        yield x[i : i + n]
        i, k = i + n, k + 1


def same_events(got, want) -> None:
    """Identical events: type, text, word times; confidences to float rounding (a batched or longer LSTM call
    rounds differently from a single or shorter one: ~1e-7)."""
    key = lambda evs: [(e.type, e.text, e.start, e.end, [(w.word, w.start, w.end) for w in e.words]) for e in evs]
    assert key(got) == key(want)
    conf = lambda evs: [w.confidence for e in evs for w in e.words]
    assert np.allclose(conf(got), conf(want), atol=1e-4)
