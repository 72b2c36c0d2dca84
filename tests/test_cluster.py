"""A real two-node Ray cluster on this machine (token authentication on): batch work spreads over both
nodes, and killing the worker node mid-run still ends with every file transcribed exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import FSDD

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.ray, pytest.mark.slow]

from ray.cluster_utils import Cluster  # noqa: E402

from stream.batch.driver import BatchOptions, run_batch  # noqa: E402
from stream.distributed.cluster import enable_token_auth, loopback_only  # noqa: E402
from stream.transcribe import transcribe_file  # noqa: E402

FAST_FAILURE_DETECTION = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_failure_threshold": 3}


@pytest.fixture
def cluster():
    """Head and worker node, both on 127.0.0.1, token authentication on (the default token file)."""
    from ray._private.authentication.authentication_token_setup import ensure_token_if_auth_enabled
    from ray._private.utils import get_ray_address_file

    enable_token_auth()
    ensure_token_if_auth_enabled(create_token_if_missing=True)  # ~/.ray/auth_token, as for `ray start --head`
    address_file = Path(get_ray_address_file(None))
    previous = address_file.read_text() if address_file.exists() else None
    with loopback_only():
        c = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False,
                            "_system_config": FAST_FAILURE_DETECTION},
        )
        worker = c.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        try:
            yield c, worker
        finally:
            ray.shutdown()
            c.shutdown()
            if previous is None:  # Cluster advertised itself as this machine's Ray: take that back
                address_file.unlink(missing_ok=True)
            else:
                address_file.write_text(previous)


def test_the_cluster_refuses_a_wrong_token(cluster):
    c, _ = cluster
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-the-token",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # dial 127.0.0.1 as given
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
