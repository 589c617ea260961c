"""The vLLM engine and OpenAI-compatible backends against real vLLM (its CPU build), on 127.0.0.1 only.

vLLM's pins (transformers < 5.20) conflict with the main environment, so it lives in `.venv-vllm` (the README's
test command makes it): the vLLM server and `--backend vllm` runs use that interpreter; everything else, the
builder's openai client included, runs in the main environment.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from conftest import run_builder

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = Path(os.environ.get("BUILDER_VLLM_PYTHON") or ROOT / ".venv-vllm" / "bin" / "python")
API_KEY = "sk-test-never-written-7f3a9c"
FAST = ["--n-samples", "2", "--n-judgments", "2", "--max-new-tokens", "12", "--judge-max-new-tokens", "24", "--seed", "3"]

if not VLLM_PYTHON.exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"CI needs vLLM's environment at {VLLM_PYTHON} (see the README's test command)")
    pytest.skip(f"no vLLM environment at {VLLM_PYTHON}", allow_module_level=True)

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def vllm_env() -> dict:
    # Loopback only, and a small KV cache so that vLLM does not reserve most of the machine's memory.
    return os.environ | {"VLLM_HOST_IP": "127.0.0.1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VllmServer:
    """vLLM's OpenAI server as a real process on 127.0.0.1, which a test can kill and start again."""

    def __init__(self, model: Path, log: Path):
        self.model, self.log, self.port = model, log, free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.process: subprocess.Popen | None = None

    def start(self, deadline_s: float = 400) -> None:
        command = [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model),
                   "--host", "127.0.0.1", "--port", str(self.port), "--enforce-eager", "--no-enable-chunked-prefill"]
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=vllm_env(), start_new_session=True)
        import httpx

        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"vLLM server exited ({self.process.returncode}); see {self.log}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(2)
        self.kill()
        raise RuntimeError(f"vLLM server not ready in {deadline_s} s; see {self.log}")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.running():
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def shared_server(tiny_model, tmp_path_factory):
    # One server for the module: it takes a minute or two to start on 2 cores.
    running = VllmServer(tiny_model, tmp_path_factory.mktemp("vllm-server") / "server.log")
    running.start()
    yield running
    running.kill()


@pytest.fixture
def server(shared_server):
    """The shared server, started again if an earlier test killed it and failed before restarting it."""
    if not shared_server.running():
        shared_server.start()
    return shared_server


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("backend-prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Name thing number {i}."}) + "\n" for i in range(4)))
    return path


def cache_rows(store: Path) -> pl.DataFrame:
    shards = sorted((store / ".cache" / "generations").rglob("*.parquet"))
    return pl.concat([pl.read_parquet(s).with_columns(pl.lit(s.name).alias("shard")) for s in shards]) if shards else pl.DataFrame()


def test_make_pairs_through_the_vllm_engine(tiny_model, prompts_file, tmp_path):
    command = [str(VLLM_PYTHON), "-c", "from builder.app.cli import main; main()", "make-pairs", "--backend", "vllm", "--model", str(tiny_model),
               "--prompts", str(prompts_file), "--store", str(tmp_path), "--dtype", "float32", *FAST]
    result = subprocess.run(command, capture_output=True, text=True, env=vllm_env(), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    version = result.stdout.strip().splitlines()[-1]
    manifest = json.loads((tmp_path / version / "manifest.json").read_text())
    assert manifest["models"]["policy"]["engine"]["backend"] == "vllm"
    candidates = pl.read_parquet(tmp_path / version / "candidates.parquet")
    assert candidates.height == 8 and candidates["n_tokens"].min() > 0
    assert run_builder("verify", version, "--store", tmp_path).returncode == 0


def test_every_stage_through_an_openai_server_and_the_key_is_never_written(server, tiny_model, prompts_file, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    store = tmp_path / "store"
    remote = ["--backend", "openai", "--endpoint", server.url, "--model", tiny_model, "--store", store]
    pairs = run_builder("make-pairs", "--prompts", prompts_file, *FAST, *remote, check=True).stdout.strip().splitlines()[-1]
    manifest = json.loads((store / pairs / "manifest.json").read_text())
    assert manifest["models"]["policy"]["engine"] == {"backend": "openai", "model": manifest["models"]["policy"]["model"]["fingerprint"]}
    judgments = pl.read_parquet(store / pairs / "judgments.parquet")
    assert judgments.height == 16 and judgments["n_tokens"].min() > 0
    again = run_builder("make-pairs", "--prompts", prompts_file, *FAST, *remote, check=True)
    assert "already built" in again.stderr

    run_builder("make-prompts", "--n-prompts", "4", "--max-new-tokens", "16", *remote, check=True)
    run_builder("make-eft", "--limit", "2", "-k", "1", "--judge-max-new-tokens", "24", *remote, check=True)
    ranked = tmp_path / "ranked.jsonl"
    ranked.write_text(json.dumps({"prompt": "Say hello.", "responses": ["Hello!", "It is a stone."], "ranks": [1, 2]}) + "\n")
    run_builder("eval", "reward-model", "--ranked", ranked, "-k", "1",
                "--judge-max-new-tokens", "24", *remote, check=True)
    remote_judge = [a if a != "--model" else "--judge" for a in remote]
    run_builder("eval", "head-to-head", "--a", tiny_model, "--b", tiny_model, "--b-temperature", "1.0", "--prompts", prompts_file,
                "--max-new-tokens", "12", "--judge-max-new-tokens", "16", *remote_judge, check=True)

    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and API_KEY.encode() in p.read_bytes()]
    leaked += [p for p in Path(os.environ["BUILDER_CACHE"]).rglob("*") if p.is_file() and API_KEY.encode() in p.read_bytes()]
    assert not leaked


def test_a_server_killed_mid_run_loses_nothing_and_doubles_nothing(server, tiny_model, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Name thing number {i}, please."}) + "\n" for i in range(40)))
    store = tmp_path / "store"
    args = ["make-pairs", "--backend", "openai", "--endpoint", server.url, "--model", tiny_model, "--prompts", prompts,
            "--store", store, "--max-concurrency", "2", "--max-retries", "2", "--request-timeout", "30",
            "--n-samples", "4", "--n-judgments", "3", "--max-new-tokens", "16", "--judge-max-new-tokens", "48"]
    run = subprocess.Popen([sys.executable, "-c", "from builder.app.cli import main; main()", *map(str, args)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 300
        while time.monotonic() < end and cache_rows(store).height < 40 and run.poll() is None:
            time.sleep(0.2)
        assert run.poll() is None, "the run ended before the server could be killed"
        server.kill()
        _, stderr = run.communicate(timeout=180)
    finally:
        run.kill()
    assert run.returncode == 2, stderr[-2000:]
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("Error: ")
    before = cache_rows(store)
    assert before.height >= 40

    server.start()
    result = run_builder(*args, check=True)
    version = result.stdout.strip().splitlines()[-1]
    after = cache_rows(store)
    saved = before.drop("shard").sort("key", "sample")  # compaction may move rows to other files, never change them
    kept = after.drop("shard").join(saved.select("key", "sample"), on=["key", "sample"], how="semi").sort("key", "sample")
    assert kept.equals(saved), "a saved answer changed"
    assert after.select("key", "sample").is_duplicated().sum() == 0, "a request was answered twice"
    samples = after.group_by("key").agg(pl.len().alias("n"), pl.col("sample").max().alias("last"))
    assert set(samples["n"].to_list()) <= {3, 4} and (samples["n"] == samples["last"] + 1).all()
    judgments = pl.read_parquet(store / version / "judgments.parquet")
    candidates = pl.read_parquet(store / version / "candidates.parquet")
    assert candidates.height == 160 and judgments.height == 480
    kept = set(zip(candidates["request_key"], candidates["sample_index"], candidates["response"])) | set(
        zip(judgments["request_key"], judgments["sample_index"], judgments["raw"])
    )
    assert set(zip(before["key"], before["sample"], before["text"])) <= kept, "an answer saved before the kill was lost"


def test_a_server_that_returns_fewer_choices_is_topped_up(server, tiny_model):
    from builder.core.records import Sampling, make_request
    from builder.engines.models import resolve_model
    from builder.engines.openai_pool import OpenAIPoolGenerator

    # max_choices_per_call=1 makes the real server answer one choice per call, as llama.cpp's does.
    generator = OpenAIPoolGenerator(resolve_model(str(tiny_model)), (server.url,), max_choices_per_call=1)
    request = make_request(generator.identity, [{"role": "user", "content": "Name a fruit."}], Sampling(4, 1.0, 1.0, 12), 0)
    topped_up = generator.generate([request])[0]
    assert len(topped_up) == 4 and all(c.n_tokens > 0 for c in topped_up)
    assert generator.generate([request])[0] == topped_up, "every call is seeded: the same request, the same answers"
    assert len(OpenAIPoolGenerator(resolve_model(str(tiny_model)), (server.url,)).generate([request])[0]) == 4


def test_a_local_policy_judged_through_a_server(server, tiny_model, prompts_file, tmp_path):
    # The policy answers in-process; the judge is a served model, as a hosted GPT-4-class judge would be.
    store = tmp_path / "store"
    local = ["--model", tiny_model, "--store", store, "--dtype", "float32"]
    pairs = run_builder("make-pairs", "--prompts", prompts_file, *FAST, *local, "--judge-endpoint", server.url, check=True)
    version = pairs.stdout.strip().splitlines()[-1]
    manifest = json.loads((store / version / "manifest.json").read_text())
    assert manifest["models"]["policy"]["engine"]["backend"] == "transformers" and manifest["models"]["judge"]["engine"]["backend"] == "openai"
    assert manifest["identity"]["judge_engine"] == {"backend": "openai"}
    assert pl.read_parquet(store / version / "judgments.parquet").height == 16
    self_judged = run_builder("make-pairs", "--prompts", prompts_file, *FAST, *local, "--limit", "1", check=True)
    assert "judge_engine" not in json.loads((store / self_judged.stdout.strip().splitlines()[-1] / "manifest.json").read_text())["identity"]

    h2h = run_builder("eval", "head-to-head", "--a", tiny_model, "--b", tiny_model, "--b-temperature", "1.0", "--prompts", prompts_file,
                      "--max-new-tokens", "12", "--judge-max-new-tokens", "16", "--judge", tiny_model, "--judge-endpoint", server.url,
                      "--store", store, "--dtype", "float32", check=True)
    h2h_manifest = json.loads((store / h2h.stdout.strip().splitlines()[-1] / "manifest.json").read_text())
    assert h2h_manifest["models"]["judge"]["engine"]["backend"] == "openai"


def test_constrained_judging_through_the_vllm_engine(tiny_model, prompts_file, tmp_path):
    command = [str(VLLM_PYTHON), "-c", "from builder.app.cli import main; main()", "make-pairs", "--backend", "vllm", "--model", str(tiny_model),
               "--prompts", str(prompts_file), "--store", str(tmp_path), "--dtype", "float32", *FAST, "--judge-max-new-tokens", "48"]
    result = subprocess.run(command, capture_output=True, text=True, env=vllm_env(), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    version = result.stdout.strip().splitlines()[-1]
    constraint = json.loads((tmp_path / version / "manifest.json").read_text())["judge"]["spec"]["constraint"]
    assert constraint["mode"] == "guided" and constraint["library"] == "vllm" and constraint["api"] == "structured_outputs.regex"
    judgments = pl.read_parquet(tmp_path / version / "judgments.parquet")
    assert judgments["parse_error"].null_count() == judgments.height and judgments["score"].is_between(0, 5).all()
    assert all(re.fullmatch(constraint["regex"], raw) for raw in judgments["raw"])
    assert judgments["score_probs"].null_count() == 0  # vLLM's logprobs at the score digit


def test_constrained_judging_through_a_vllm_server_with_structured_outputs(server, tiny_model, prompts_file, tmp_path):
    store = tmp_path / "store"
    result = run_builder("make-pairs", "--prompts", prompts_file, *FAST, "--judge-max-new-tokens", "48", "--model", tiny_model,
                         "--store", store, "--dtype", "float32", "--judge-endpoint", server.url, "--score", "expected", check=True)
    version = result.stdout.strip().splitlines()[-1]
    manifest = json.loads((store / version / "manifest.json").read_text())
    constraint = manifest["judge"]["spec"]["constraint"]
    assert constraint["mode"] == "guided" and constraint["library"] == "vllm server" and constraint["rationale_chars"][1] <= 48
    judgments = pl.read_parquet(store / version / "judgments.parquet")
    assert judgments["parse_error"].null_count() == judgments.height and judgments["score"].is_between(0, 5).all()
    assert all(re.fullmatch(constraint["regex"], raw) for raw in judgments["raw"])
    assert judgments["expected_score"].null_count() == 0  # from the server's top_logprobs
    shards = cache_rows(store)
    # one cached answer per distinct judge request (an identical request is asked once), each with its probabilities
    assert set(judgments["request_key"]) <= set(shards.filter(pl.col("choice_probs").is_not_null())["key"])
