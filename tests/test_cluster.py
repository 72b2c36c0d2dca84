"""A real two-node Ray cluster on this machine (token authentication on): batch work spreads over both
nodes, and killing the worker node mid-run still ends with every file transcribed exactly once; live streams
whose pipeline runs on the killed node go on with exactly the finals they would have given."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from conftest import FSDD

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.ray, pytest.mark.slow]

from stream.batch.driver import BatchOptions, run_batch  # noqa: E402
from stream.transcribe import transcribe_file  # noqa: E402


def test_the_cluster_refuses_a_wrong_token(cluster_head):
    c = cluster_head
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-the-token",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # dial 127.0.0.1 as given
           "RAY_gcs_server_port_wait_time_s": "1"}  # one try: Ray retries a refused token for 20 s, as it would a head not up yet
    probe = subprocess.run(
        [sys.executable, "-c", f"import ray; ray.init(address={c.address!r}); print('joined')"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert probe.returncode != 0 and "joined" not in probe.stdout
    assert "auth" in (probe.stderr + probe.stdout).lower()


def test_killing_a_worker_node_mid_run_loses_no_file(cluster, tmp_path, recognizer):
    c, worker = cluster
    files = sorted(str(p) for p in FSDD.glob("[0-9]_lucas_1*.wav"))[:60]
    out = tmp_path / "out.jsonl"
    killed = []

    def kill_worker_once_both_nodes_delivered(summary):
        if not killed and len(summary.per_worker) == 2 and min(summary.per_worker.values()) >= 3:
            killed.append(dict(summary.per_worker))
            c.remove_node(worker, allow_graceful=False)

    opts = BatchOptions(address=c.address, streams=6, chunk_seconds=0.2, progress=False)
    summary = run_batch(files, out, "digits", opts, errors=None, on_file=kill_worker_once_both_nodes_delivered)

    assert killed, "the worker node was never killed: work did not spread over both nodes"
    assert summary.resubmitted > 0  # files in flight on the dead node were sent again
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert Counter(r["path"] for r in rows) == Counter(files)  # every file exactly once
    assert summary.transcribed == len(files) and summary.failed == 0
    for row in rows[::6]:
        assert row == transcribe_file(recognizer, row["path"]).to_dict()


def test_fifty_live_streams_survive_the_loss_of_the_node_that_runs_their_pipeline(cluster, recognizer):
    """The pipeline on the worker node, its standby on the head; the worker node removed mid-utterance."""
    from test_failover import digit_streams, finals, live_run

    from models.checkpoint import load_checkpoint
    from stream.distributed.cluster import RayCluster
    from stream.ingest import Ingest
    from stream.options import recommended_options
    from stream.pipeline import LocalPipeline, PipelineSpec

    c, worker = cluster
    checkpoint = load_checkpoint("digits")
    ray_cluster = RayCluster.start("digits", address=c.address)
    spec = PipelineSpec(device="cpu", options=recommended_options(checkpoint), standby=True)
    pipeline = ray_cluster.pipeline(spec, node_id=worker.node_id)
    assert pipeline.node_id == worker.node_id and pipeline.warm()
    streams = digit_streams(50)
    want, _ = live_run(Ingest(LocalPipeline(recognizer.extractor, recognizer.model, recognizer.backend)), streams)
    ingest = Ingest(pipeline)
    got, after = live_run(ingest, streams, fail=lambda: c.remove_node(worker, allow_graceful=False))
    assert {n: finals(v) for n, v in got.items()} == {n: finals(v) for n, v in want.items()}
    assert ingest.stats.recoveries == 1 and pipeline.node_id != worker.node_id
    assert len(after) == len(streams)
    pipeline.close()
