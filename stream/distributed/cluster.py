"""Ray itself: join a cluster or start one on this machine, token authentication on, the model in its object store.

`RayCluster` is the one place Ray is started: sessions (`RayRecognizer`), batch workers and the benchmarks all
get their pipelines from it.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager, nullcontext
from pathlib import Path

from models.checkpoint import DEFAULT_MODEL, resolve_model
from models.errors import one_line

from ..pipeline import PipelineSpec
from .actors import RayPipeline


def enable_token_auth() -> None:
    """Keep Ray's token authentication on for clusters we start and send the token to clusters we join.

    Ray reads the token from RAY_AUTH_TOKEN, the file named by RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token.
    An explicit RAY_AUTH_MODE set by the user is respected.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        from ray._raylet import Config

        Config.initialize("")  # this process may have read the mode already
    except Exception:
        pass


def init_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join the cluster at `address` (or RAY_ADDRESS), else start a local Ray on 127.0.0.1; -> True if started.

    A new local Ray creates ~/.ray/auth_token if there is none; joining needs the head's token.
    """
    import ray

    if ray.is_initialized():
        return False
    enable_token_auth()
    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address:
        loopback = address.rsplit(":", 1)[0] in ("127.0.0.1", "localhost")  # dial it as given, not the LAN address
        try:
            with loopback_only() if loopback else nullcontext():
                ray.init(address=address, **quiet)
        except Exception as e:
            if "auth" in str(e).lower() or "token" in str(e).lower():
                raise RuntimeError(
                    f"cannot join Ray at {address}: {one_line(e)}. Its token authentication needs the head "
                    "node's token: run `ray get-auth-token` there and put it in RAY_AUTH_TOKEN or ~/.ray/auth_token"
                ) from None
            raise
        return False
    with loopback_only():
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)
    return True


@contextmanager
def loopback_only():
    """Let Ray bind and dial 127.0.0.1 as it does on macOS (on Linux it swaps loopback for the LAN address):
    a Ray started for this machine alone is then not reachable from the network."""
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


class RayCluster:
    """The Ray this process joined or started, with one model's checkpoint in its object store."""

    def __init__(self, checkpoint, started: bool):
        self.checkpoint = checkpoint  # an ObjectRef of the checkpoint's bytes: worker nodes need no model file
        self.started = started

    @classmethod
    def start(cls, model: str | Path = DEFAULT_MODEL, address: str | None = None, num_cpus: int | None = None) -> RayCluster:
        """Join `address` (else RAY_ADDRESS, else a new Ray on 127.0.0.1) and put the model in its object store."""
        import ray

        data = resolve_model(model).read_bytes()  # a bad model fails here, before Ray starts
        started = init_ray(address, num_cpus)
        return cls(ray.put(data), started)

    def nodes(self) -> list[str]:
        import ray

        return sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))

    def here(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def pipeline(self, spec: PipelineSpec, node_id: str | None = None, timeout: float = 120.0) -> RayPipeline:
        """A pipeline on `node_id` (None: where Ray places it), its actors up and the model loaded."""
        pipeline = RayPipeline(spec, self.checkpoint, node_id)
        try:
            pipeline.wait_ready(timeout)
        except Exception:
            pipeline.close()
            raise
        return pipeline

    def close(self) -> None:
        """Shut Ray down if this process started it."""
        if self.started:
            import ray

            ray.shutdown()
            self.started = False


def start_pipeline(
    model: str | Path, spec: PipelineSpec, address: str | None = None, num_cpus: int | None = None
) -> tuple[RayCluster, RayPipeline]:
    """Ray (joined or started) and one pipeline on this node: what live clients and the benchmarks use."""
    cluster = RayCluster.start(model, address, num_cpus)
    try:
        return cluster, cluster.pipeline(spec, node_id=cluster.here())
    except Exception:
        cluster.close()
        raise
