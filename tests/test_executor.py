"""The shard executors: in-process, and Ray tasks on a real local Ray cluster (two CPUs, no dashboard, its logs and
sockets in a temporary folder, shut down after the module)."""

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import run_builder

from builder.core.errors import BuilderError
from builder.stages.executor import RAY_RETRIES, LocalExecutor, open_executor

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A local Ray cluster for this module, its workers with the tests' model cache (conftest's isolated_cache). Its
    folder (logs, sockets) is short on purpose: Ray's socket paths must stay under 108 characters."""
    folder = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    cache = {"BUILDER_CACHE": str(tmp_path_factory.getbasetemp() / "builder-cache")}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=folder, runtime_env={"env_vars": cache})
    # The tasks below live in this test module, which the workers cannot import: send them by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(folder, ignore_errors=True)


def square(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def refuse(folder: str) -> None:
    tries = Path(folder) / "tries"
    tries.write_text(tries.read_text() + "x" if tries.exists() else "x")
    raise BuilderError("prompts.jsonl: no prompt column")


def die_once(folder: str) -> str:
    """Kills its own worker process on the first try, as an OOM killer or a lost node would; succeeds on the next."""
    marker = Path(folder) / "died"
    if not marker.exists():
        marker.write_text("")
        os._exit(1)
    return "done"


def test_local_runs_every_call_in_this_process_in_order():
    assert LocalExecutor().run(square, [(i,) for i in range(4)]) == [(i * i, os.getpid()) for i in range(4)]


def test_ray_runs_every_call_as_a_task_and_returns_results_in_order(ray_cluster):
    with open_executor("ray") as executor:
        results = executor.run(square, [(i,) for i in range(6)])
        assert executor.device().kind == "cpu"  # no GPU in this cluster: tasks ask for none
    assert [r for r, _ in results] == [i * i for i in range(6)]
    assert os.getpid() not in {pid for _, pid in results}, "the tasks ran in Ray's workers"
    assert ray.is_initialized(), "a connection made before the executor is left open"


def test_a_task_s_builder_error_is_one_line_and_not_retried(ray_cluster, tmp_path):
    with open_executor("ray") as executor, pytest.raises(BuilderError) as raised:
        executor.run(refuse, [(str(tmp_path),)])
    assert str(raised.value) == "prompts.jsonl: no prompt column"
    assert (tmp_path / "tries").read_text() == "x", "bad input stays bad: no retry"


def test_a_task_whose_worker_dies_is_retried(ray_cluster, tmp_path):
    assert RAY_RETRIES >= 1
    with open_executor("ray") as executor:
        assert executor.run(die_once, [(str(tmp_path),)]) == ["done"]
    assert (tmp_path / "died").exists()



def test_make_pairs_on_ray_is_the_same_version_as_a_local_run(ray_cluster, tiny_model, tmp_path):
    """Two shards (16 prompts per shard at batch size 1, 18 prompts) as Ray tasks, each loading its own engine, then
    the merge here: the same id and the very same table files as the local run in another store."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Name thing number {i}."}) + "\n" for i in range(18)))
    fast = ["--model", tiny_model, "--prompts", prompts, "--n-samples", "2", "--n-judgments", "1", "--max-new-tokens", "8",
            "--judge-max-new-tokens", "24", "--batch-size", "1", "--shard-size", "16"]
    local = run_builder("make-pairs", *fast, "--store", tmp_path / "local", check=True).stdout.strip().splitlines()[-1]
    on_ray = run_builder("make-pairs", *fast, "--store", tmp_path / "ray", "--executor", "ray", check=True)
    assert on_ray.stdout.strip().splitlines()[-1] == local
    manifests = [json.loads((tmp_path / store / local / "manifest.json").read_text()) for store in ("local", "ray")]
    tables = [{name: f for name, f in m["files"].items() if name != "README.md"} for m in manifests]
    assert tables[0] == tables[1] and len(tables[0]) >= 5, "every table file has the same sha256"
    assert manifests[0]["counts"] == manifests[1]["counts"] and manifests[0]["counts"]["prompts"] == 18
