"""Backends compared, run by hand (not a test): same prompts, same model, same machine, one run.

For each backend (transformers, vllm in-process, openai = HTTP to a local vLLM server started here on
127.0.0.1): a whole make-pairs build on an empty store, its candidate and judge stage throughput (generated
tokens per second, from the version's own tables and manifest timings), then the raw engine on exactly the same
requests (no cache, no tables), and the ratio builder wall / raw wall (target <= 1.10x).

Needs vLLM, so run it with the vLLM environment's interpreter:

    .venv-vllm/bin/python bench/backends.py --limit 16                         # all three backends
    .venv-vllm/bin/python bench/backends.py --backends vllm,openai --model DIR  # a GPU machine, another model
"""

import argparse
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import polars as pl

os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")  # loopback only, in-process and server alike


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_path: Path, dtype: str, log: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_path), "--host", "127.0.0.1",
               "--port", str(port), "--dtype", dtype]
    import torch

    env = dict(os.environ)
    if not torch.cuda.is_available():
        # Chunked prefill crashes seeded requests on vLLM 0.32's CPU build (see builder/vllm_generator.py).
        command += ["--enforce-eager", "--no-enable-chunked-prefill"]
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    server = subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(300):
        if server.poll() is not None:
            raise SystemExit(f"vLLM server exited; see {log}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        time.sleep(2)
    stop_server(server)
    raise SystemExit(f"vLLM server not ready in 600 s; see {log}")


def stop_server(server: subprocess.Popen) -> None:
    """The whole process group: vLLM's engine core is a child process that outlives a killed API server."""
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.wait(timeout=60)


def measure(config, engine_options) -> dict:
    from builder.core.records import Sampling
    from builder.core.store import Store
    from builder.engines.generators import load_generator
    from builder.engines.models import resolve_model
    from builder.engines.runner import plan_batches
    from builder.judging.score import judge_jobs
    from builder.judging.setup import prepare_judge
    from builder.stages.make_pairs import candidate_requests, make_pairs

    with tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        version, _ = make_pairs(config, Store(root))
        builder_s = time.perf_counter() - started
        candidates = pl.read_parquet(version.folder / "candidates.parquet")
        judgments = pl.read_parquet(version.folder / "judgments.parquet")
        prompts = pl.read_parquet(version.folder / "prompts.parquet")
        timing = version.manifest.timing_s

    served = config.backend == "openai"
    gc.collect()  # the build's engine is gone before the raw one loads: one model in memory at a time
    started = time.perf_counter()
    generator = load_generator(resolve_model(config.model, None, served), config.backend, config.dtype, config.batch_size, engine_options)
    load_s = time.perf_counter() - started
    candidate_sampling = Sampling(config.n_samples, config.temperature, config.top_p, config.max_new_tokens)
    judge = prepare_judge("pointwise", config.judge_template, config.n_judgments, config.judge_temperature, config.judge_top_p,
                          config.judge_max_new_tokens, config.judge_constraint, config.rationale_min_chars, config.rationale_max_chars,
                          config.backend, engine_options)
    stages = {}
    for stage, requests in (
        ("candidates", candidate_requests(generator, prompts, candidate_sampling, config.seed)),
        ("judgments", [r for _, _, r in judge_jobs(generator, judge.spec, prompts, candidates, judge.sampling, config.seed, judge.constraint)]),
    ):
        unique = list({r.key: r for r in requests}.values())
        t0 = time.perf_counter()
        tokens = 0
        for batch in plan_batches(unique, config.batch_size if not served else len(unique)):
            tokens += sum(c.n_tokens for answer in generator.generate(batch) for c in answer)
        stages[stage] = (time.perf_counter() - t0, tokens)
    raw_s = time.perf_counter() - started
    return {
        "backend": config.backend,
        "builder_wall_s": round(builder_s, 2),
        "raw_engine_wall_s": round(raw_s, 2),
        "ratio": round(builder_s / raw_s, 3),
        # The stages alone: the build's first engine load is cold and the raw one's warm, so the whole-wall
        # ratio also measures that difference; this one is generation plus the builder's cache and tables.
        "stage_ratio": round((timing["candidates"] + timing["judgments"]) / (stages["candidates"][0] + stages["judgments"][0]), 3),
        "model_load_s": round(load_s, 2),
        "builder_candidates_tok_per_s": round(candidates["n_tokens"].sum() / timing["candidates"], 1),
        "builder_judgments_tok_per_s": round(judgments["n_tokens"].sum() / timing["judgments"], 1),
        "raw_candidates_tok_per_s": round(stages["candidates"][1] / stages["candidates"][0], 1),
        "raw_judgments_tok_per_s": round(stages["judgments"][1] / stages["judgments"][0], 1),
    }


def warm_imports(backends: list[str]) -> None:
    """Imports happen once per process; paid before any clock starts, so the build (timed first) and the raw
    engine (timed second) are not charged differently for them."""
    import transformers  # noqa: F401

    if "vllm" in backends:
        import vllm  # noqa: F401


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="transformers,vllm,openai")
    parser.add_argument("--model", default=None, help="a local model folder [default: the embedded SmolLM2-135M-Instruct]")
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--judge-max-new-tokens", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dtype", default="auto", help="auto: bfloat16 on a GPU, float32 on a CPU")
    args = parser.parse_args()

    from builder.engines.generators import resolve_dtype
    from builder.engines.models import resolve_model
    from builder.engines.options import EngineOptions
    from builder.stages.make_pairs import MakePairsConfig

    model = resolve_model(args.model)  # the embedded model's one-off conversion is not part of any clock
    warm_imports(args.backends.split(","))
    base = MakePairsConfig(model=str(model.path), limit=args.limit, max_new_tokens=args.max_new_tokens,
                           judge_max_new_tokens=args.judge_max_new_tokens, batch_size=args.batch_size, dtype=resolve_dtype(args.dtype))
    results, server = [], None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a `timeout` still runs the finally that stops the server
    try:
        for backend in args.backends.split(","):
            options = EngineOptions()
            if backend == "openai":
                server, url = start_server(model.path, base.dtype, Path(tempfile.gettempdir()) / "bench-vllm-server.log")
                options = EngineOptions(endpoints=(url,), max_concurrency=args.batch_size)
            result = measure(replace(base, backend=backend, engine_options=options), options)
            if server is not None:  # an idle server still holds memory and threads: gone before the next backend
                stop_server(server)
                server = None
            print(json.dumps(result), flush=True)
            results.append(result)
    finally:
        if server is not None:
            stop_server(server)
    print("\n| backend | builder wall s | raw engine s | ratio | stage ratio | candidates tok/s (builder / raw) | judgments tok/s (builder / raw) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['backend']} | {r['builder_wall_s']} | {r['raw_engine_wall_s']} | {r['ratio']} | {r['stage_ratio']} | "
              f"{r['builder_candidates_tok_per_s']} / {r['raw_candidates_tok_per_s']} | {r['builder_judgments_tok_per_s']} / {r['raw_judgments_tok_per_s']} |")


if __name__ == "__main__":
    main()
