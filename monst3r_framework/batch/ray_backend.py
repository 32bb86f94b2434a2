"""The Ray backend: one Ray task per video; the only module that imports Ray.

* Each task asks for ``cpus_per_video`` CPUs and ``gpus_per_video`` GPUs (fractions share a GPU).
* A task whose worker process dies (killed, out of memory, node lost) is retried by Ray up to
  ``max_retries`` times; a video that fails on its own (bad input, stage error) is not retried: its
  row says ``failed`` with the error.
* Ray reuses worker processes between tasks, so each process's registry and stage pool (the
  weights it loaded) serve every video it runs after its first.
* A small actor (the board) collects each running video's current stage and attempt number for
  the driver's progress display.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

from ..errors import InputError
from .manifest import BatchItem
from .worker import BatchSettings, run_item

INSTALL_HINT = "--backend ray needs Ray: pip install 'monst3r-fw[ray]' (or pip install 'ray>=2.9')"


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError(INSTALL_HINT) from None
    return ray


class _Board:
    """Current stage and attempt count of every video (lives in one Ray actor)."""

    def __init__(self) -> None:
        self.stages: dict[str, str] = {}
        self.attempts: dict[str, int] = {}
        self.pids: dict[str, int] = {}

    def start(self, item_id: str, pid: int) -> int:
        self.attempts[item_id] = self.attempts.get(item_id, 0) + 1
        self.pids[item_id] = pid
        self.stages[item_id] = "starting"
        return self.attempts[item_id]

    def stage(self, item_id: str, stage: str) -> None:
        self.stages[item_id] = stage

    def snapshot(self) -> dict[str, tuple[str, int, int]]:
        return {k: (v, self.attempts.get(k, 0), self.pids.get(k, 0)) for k, v in self.stages.items()}


def _task(item: BatchItem, settings: BatchSettings, board: Any) -> dict[str, Any]:
    import ray

    attempt = ray.get(board.start.remote(item.id, os.getpid()))
    return run_item(item, settings, on_stage=lambda stage: board.stage.remote(item.id, stage), attempt=attempt)


def run_on_ray(items: list[BatchItem], settings: BatchSettings, *, address: Optional[str], gpus_per_video: float,
               cpus_per_video: float, max_retries: int, display: Any, record: Callable[[dict[str, Any]], None],
               mark_running: Callable[[str], None], poll_s: float = 0.25) -> None:
    """Submit one task per item and record each row as it arrives (see the module docstring)."""
    ray = import_ray()
    started_here = False
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except ConnectionError as exc:
            raise InputError(f"--address {address}: cannot connect to a Ray cluster ({exc}); start one with "
                             "`ray start --head` or leave --address out for a local instance") from None
        started_here = True
    try:
        total_gpus = float(ray.cluster_resources().get("GPU", 0.0))
        if gpus_per_video > 0 and total_gpus < gpus_per_video:
            raise InputError(f"--gpus-per-video {gpus_per_video}: the Ray cluster has {total_gpus:g} GPU(s); "
                             "lower it or use --gpus-per-video 0 for CPU")
        board = ray.remote(_Board).options(num_cpus=0).remote()
        task = ray.remote(_task).options(num_cpus=cpus_per_video, num_gpus=gpus_per_video, max_retries=max_retries,
                                         retry_exceptions=False)
        by_ref = {task.remote(item, settings, board): item for item in items}
        pending = list(by_ref)
        finished: set[str] = set()
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=poll_s)
                snapshot = ray.get(board.snapshot.remote())
                for ref in done:
                    item = by_ref[ref]
                    try:
                        row = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        attempts = snapshot.get(item.id, ("", 0, 0))[1]
                        first = " ".join(str(exc).split())[:300]
                        row = {"id": item.id, "input": item.input, "status": "failed", "frames": None, "stages": [],
                               "computed": [], "metrics": {}, "seconds": 0.0, "attempt": attempts,
                               "error": f"worker lost after {attempts} attempt(s) (max_retries={max_retries}): "
                                        f"{type(exc).__name__}: {first}"}
                    finished.add(item.id)
                    record(row)
                for item_id, (stage, attempt, _pid) in snapshot.items():
                    if item_id not in finished:
                        mark_running(item_id)
                        display.stage(item_id, stage if attempt <= 1 else f"{stage} (attempt {attempt})")
        except KeyboardInterrupt:
            # Ask running tasks to stop (KeyboardInterrupt inside them: stores close, locks are
            # released), give them a moment, then force what is left.
            for ref in pending:
                ray.cancel(ref, force=False)
            ray.wait(pending, num_returns=len(pending), timeout=10)
            for ref in pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # already finished
                    pass
            raise
    finally:
        if started_here:
            ray.shutdown()
