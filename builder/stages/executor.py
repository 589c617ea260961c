"""Where a stage's shards run: one after another in this process (`local`), or as Ray tasks (`ray`).

A shard function is called with picklable arguments and does its whole job itself: it loads its own generator,
answers through the store's generation cache and saves its parts in the store. So every node of a Ray cluster
needs the builder installed and the store at the same path (a shared filesystem), and a shard rerun (by Ray after
its worker died, or by the same command after the run was killed) asks for nothing that was already answered.

Ray does the scheduling: a task asks for one GPU (or `--tensor-parallel-size` of them) where its backend runs a
model on the cluster's GPUs; on a cluster of CPUs, for a whole node's CPUs, and it computes with as many threads,
as a local run on that node does (float sums depend on the thread count, so a task on one thread would not give a
local run's bytes); a task that only calls servers asks for one CPU. A task whose worker process dies is retried
up to RAY_RETRIES times; an error the task raised is not retried (bad input stays bad) and ends the run with its
one line.
"""

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from builder.core.errors import BuilderError
from builder.core.progress import console, progress_bar
from builder.engines.batching import Device, local_device

EXECUTORS = ("local", "ray")
RAY_RETRIES = 3  # further tries of a task whose worker died (killed, out of memory, a lost node)
INSTALL_HINT = "--executor ray needs Ray: pip install 'self-rewarding-builder[ray]'"

Call = tuple[Any, ...]


class LocalExecutor:
    """Shards one after another in this process, on its device."""

    def device(self) -> Device:
        return local_device()

    def has_gpus(self) -> bool:
        return False  # GPUs are asked for by tasks; this process uses whatever it sees

    def node_cpus(self) -> int:
        return 1

    def run(self, function: Callable, calls: list[Call], gpus: int = 0, cpus: int = 1, label: str = "shards") -> list:
        results = []
        for i, call in enumerate(calls):
            if len(calls) > 1:
                console.print(f"{label}: {i + 1} of {len(calls)}")
            results.append(function(*call))
        return results


class RayExecutor:
    """Shards as Ray tasks on the cluster this process is connected to."""

    def __init__(self, ray):
        self.ray = ray

    def has_gpus(self) -> bool:
        return self.ray.cluster_resources().get("GPU", 0) >= 1

    def node_cpus(self) -> int:
        """The CPUs of the smallest node: what a task that takes a whole node asks for."""
        return int(min(node["Resources"].get("CPU", 0) for node in self.ray.nodes() if node["Alive"] and node["Resources"].get("CPU")))

    def device(self) -> Device:
        """The device a task gets: asked of a task on one of the cluster's GPUs, or a CPU when it has none."""
        if not self.has_gpus():
            return Device("cpu")
        return self.ray.get(self.ray.remote(num_gpus=1)(local_device).remote())

    def run(self, function: Callable, calls: list[Call], gpus: int = 0, cpus: int = 1, label: str = "shards") -> list:
        """function(*call) for every call as a Ray task of `gpus` GPUs and `cpus` CPUs; the results in the order of `calls`."""
        ray = self.ray
        task = ray.remote(on_given_cpus).options(num_gpus=gpus, num_cpus=cpus, max_retries=RAY_RETRIES, retry_exceptions=False)
        refs = [task.remote(function, *call) for call in calls]
        order = {ref: i for i, ref in enumerate(refs)}
        results: list = [None] * len(refs)
        pending = list(refs)
        with progress_bar() as bar:
            shown = bar.add_task(f"{label} on Ray", total=len(refs))
            try:
                while pending:
                    done, pending = ray.wait(pending, num_returns=1)
                    for ref in done:
                        results[order[ref]] = fetch(ray, ref, order[ref])
                        bar.advance(shown)
            finally:
                for ref in pending:  # after a failure (or a Ctrl-C): what is finished is saved, the rest stops
                    ray.cancel(ref)
        return results


def on_given_cpus(function: Callable, *args):
    """function(*args) in a Ray worker, torch computing on as many threads as the task was given CPUs (Ray sets
    OMP_NUM_THREADS when it starts a worker, but a worker it reuses keeps the count of its first task)."""
    import ray
    import torch

    torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    return function(*args)


def fetch(ray, ref, index: int):
    """A task's result; its own BuilderError (or the machine's OSError) as that error, one line; a worker that died
    more than RAY_RETRIES times as one line saying so."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:
        if isinstance(error.cause, BuilderError | OSError):
            raise error.cause from None
        raise
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.OutOfMemoryError) as error:
        raise BuilderError(f"shard {index}: its Ray worker died {RAY_RETRIES + 1} times ({type(error).__name__}); "
                           "run the same command again to continue") from None


@contextlib.contextmanager
def open_executor(kind: str = "local", ray_address: str | None = None) -> Iterator[LocalExecutor | RayExecutor]:
    """The executor, and for Ray a connection: to the cluster at `ray_address` (`auto`, or `ray://head:10001`), or to
    a local cluster started here and stopped after. A process already connected (ray.init before) stays so."""
    if kind == "local":
        yield LocalExecutor()
        return
    try:
        import ray
    except ImportError:
        raise BuilderError(INSTALL_HINT) from None
    if ray.is_initialized():
        yield RayExecutor(ray)
        return
    try:
        # log_to_driver off: the tasks' own progress bars stay in the workers' logs (the session folder), not here.
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as error:
        where = ray_address or "a new local cluster"
        raise BuilderError(f"cannot reach the Ray cluster at {where}: {str(error).splitlines()[0]}") from None
    try:
        yield RayExecutor(ray)
    finally:
        ray.shutdown()
