"""The Generator seam: anything that turns a batch of Requests into n Completions each.

The transformers backend lives here; the vLLM engine (vllm_engine.py) and a pool of OpenAI-compatible
servers (openai_pool.py) implement the same members: `identity`, `context` (its ContextWindow, see
context.py) and `generate`. A backend may also offer `generate_streaming(requests, on_answer)`, answering in
any order; the cache then saves answers as they complete rather than per batch.
"""

import hashlib
import os
from collections.abc import Callable
from typing import Protocol

from builder.core.errors import BuilderError
from builder.core.progress import quiet_transformers
from builder.core.records import Completion, Request
from builder.engines.chat_template import ensure_chat_template
from builder.engines.context import ContextWindow, local_window
from builder.engines.models import ModelRef
from builder.engines.options import DTYPES


class Generator(Protocol):
    # Everything about the backend that changes its answers (model fingerprint, backend, dtype, …).
    # It goes into every request's cache key and into the manifest.
    identity: dict
    # The context length and the token count of a conversation, for dropping prompts too long before generating.
    context: ContextWindow

    def generate(self, requests: list[Request]) -> list[list[Completion]]:
        """Answer each request with exactly request.sampling.n completions, in order."""
        ...


class TransformersGenerator:
    """Batched `generate` with left padding; one call samples n continuations of every prompt in the batch.

    Torch has one random generator per process, so a batch is seeded from the seeds of the requests in it:
    the same batch gives the same answers, which is what makes a resumed run equal an uninterrupted one.
    """

    def __init__(self, model: ModelRef, dtype: str = "float32", device: str | None = None, batch_size: int = 16):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        quiet_transformers()
        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model.path)
            self.model = AutoModelForCausalLM.from_pretrained(model.path, dtype=getattr(torch, dtype)).to(self.device)
        except (OSError, ValueError) as error:
            raise BuilderError(f"cannot load model from {model.path}: {str(error).splitlines()[0]}") from None
        default_template = ensure_chat_template(self.tokenizer)  # a base model reads the builder's default
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.eval()
        self.context = local_window(self.tokenizer, self.model.config)
        self.stop_ids = self._stop_token_ids()
        self.batch_size = batch_size
        # batch_size is part of the identity: it decides which requests share a random stream.
        self.identity = {"backend": "transformers", "model": model.fingerprint, "dtype": dtype, "batch_size": batch_size} | default_template
        self._guide = None

    def guide(self):
        if self._guide is None:
            from builder.engines.guided import Guide

            self._guide = Guide(self.tokenizer, self.model.config.vocab_size, self.stop_ids)
        return self._guide

    def _stop_token_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
        ids.add(self.tokenizer.eos_token_id)
        return {i for i in ids if i is not None}

    def generate(self, requests: list[Request]) -> list[list[Completion]]:
        torch = self.torch
        sampling, constraint = requests[0].sampling, requests[0].constraint
        if any(r.sampling != sampling or r.constraint != constraint for r in requests):
            raise ValueError("one batch must share its sampling parameters and constraint")
        texts = [self.tokenizer.apply_chat_template(list(r.messages), tokenize=False, add_generation_prompt=True) for r in requests]
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        torch.manual_seed(batch_seed(requests))
        sample = sampling.temperature > 0
        # top_k=0: the model's generation_config may carry a top-k; the recipe samples with top-p alone.
        knobs = {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0} if sample else {"do_sample": False}
        processors, probe = [], None
        if constraint is not None:
            processors, probe = self.guide().processors(constraint, sampling.max_new_tokens, batch["input_ids"].shape[1])
        with torch.inference_mode():
            output = self.model.generate(
                **batch,
                **knobs,
                max_new_tokens=sampling.max_new_tokens,
                num_return_sequences=sampling.n if sample else 1,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=sorted(self.stop_ids),
                logits_processor=self._processor_list(processors),
            )
        new_tokens = output[:, batch["input_ids"].shape[1] :].tolist()
        completions = [self._completion(tokens, row, probe) for row, tokens in enumerate(new_tokens)]
        if not sample:  # greedy decoding has one answer; n copies of it keep the shape callers expect
            completions = [c for c in completions for _ in range(sampling.n)]
        return [completions[i * sampling.n : (i + 1) * sampling.n] for i in range(len(requests))]

    def _processor_list(self, processors: list):
        from transformers import LogitsProcessorList

        return LogitsProcessorList(processors) if processors else None

    def _completion(self, tokens: list[int], row: int, probe=None) -> Completion:
        stop = next((i for i, token in enumerate(tokens) if token in self.stop_ids), None)
        kept = tokens if stop is None else tokens[:stop]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        probs = probe.probabilities(row, len(kept) - 1, kept[-1]) if probe is not None and kept and stop is not None else None
        return Completion(text.strip(), "length" if stop is None else "stop", len(kept), probs)


def batch_seed(requests: list[Request]) -> int:
    digest = hashlib.sha256(",".join(str(r.seed) for r in requests).encode()).hexdigest()
    return int(digest[:15], 16)


def resolve_dtype(dtype: str, on_gpu: Callable[[], bool] | None = None) -> str:
    """'auto' is bfloat16 on a GPU and float32 on a CPU: a CPU without AVX512-BF16 or AMX emulates bfloat16
    matmuls, which made generation 5.2x slower than float32 on this project's AVX2 machine. `on_gpu` says whether
    generation runs on a GPU [default: whether this process sees one]."""
    if dtype not in DTYPES:
        raise BuilderError(f"unknown dtype {dtype!r} (available: {', '.join(DTYPES)})")
    if dtype != "auto":
        return dtype
    if on_gpu is None:
        import torch

        return "bfloat16" if torch.cuda.is_available() else "float32"
    return "bfloat16" if on_gpu() else "float32"


def guided_decoding(backend: str, engine_options=None) -> dict | None:
    """What holds answers to a regex on this backend (library, version, whether it closes a free part before
    the token limit), or None when nothing does. Known before any model is loaded, so it can enter an identity;
    for servers it asks them (see openai_pool.server_guided_decoding)."""
    from builder.engines.options import EngineOptions

    if backend == "transformers":
        from builder.engines.guided import library

        return library()
    if backend == "vllm":
        from builder.engines.vllm_engine import guided_decoding as vllm_guided_decoding

        return vllm_guided_decoding()
    if backend == "openai":
        import httpx

        from builder.engines.openai_pool import base_url, server_guided_decoding

        options = engine_options or EngineOptions()
        key = os.environ.get(options.api_key_env)
        endpoints = tuple(dict.fromkeys(base_url(e) for e in options.endpoints))
        return server_guided_decoding(endpoints, {"Authorization": f"Bearer {key}"} if key else {}, httpx.Timeout(min(10.0, options.request_timeout)))
    return None


def load_generator(
    model: ModelRef, backend: str = "transformers", dtype: str = "float32", batch_size: int = 16, engine_options=None
) -> Generator:
    from builder.engines.options import EngineOptions

    options = engine_options or EngineOptions()
    options.check(backend)
    if backend == "openai":
        from builder.engines.openai_pool import OpenAIPoolGenerator

        return OpenAIPoolGenerator(
            model, options.endpoints, options.max_concurrency, options.request_timeout, options.max_retries, options.api_key_env
        )
    if model.path is None:
        raise BuilderError(f"model {model.spec!r} is not a local model; only --backend openai can use a served model name")
    if backend == "vllm":
        from builder.engines.vllm_engine import VllmGenerator

        return VllmGenerator(model, dtype, options.tensor_parallel_size, options.max_model_len)
    if backend == "transformers":
        return TransformersGenerator(model, dtype=dtype, batch_size=batch_size)
    raise BuilderError(f"unknown backend {backend!r} (available: transformers, vllm, openai)")
