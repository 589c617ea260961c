"""`--batch-size auto`: batches sized to the device that generates.

- transformers on a CPU: 16 (a larger batch gains nothing on a few cores and waits longer for its longest answer).
- transformers on a GPU: 128 (SmolLM2-135M on an H100 generated 3.9x faster than at 16), fewer where the free GPU
  memory cannot hold that many requests' key/value cache next to the weights.
- vllm: 1024 requests at a time: vLLM schedules its own batches inside them, and a kill loses at most one.
- openai: the pool streams requests with --max-concurrency per endpoint; the batch size is not used (16 is recorded).

Where a batch size decides answers, it is in the version's identity as the number resolved, never as `auto`: the
transformers backend seeds a batch from the requests in it, so another batch size is another random stream. vLLM
and servers seed each request on its own, so there the batch size is left out of the identity and changes nothing.
"""

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, replace

from builder.core.records import Sampling
from builder.engines.generators import resolve_dtype
from builder.engines.models import ModelRef
from builder.engines.options import AUTO, parse_batch_size

CPU_BATCH = 16
GPU_BATCH = 128
VLLM_BATCH = 1024
OPENAI_BATCH = 16
PROMPT_TOKENS = 1024  # the prompt length a GPU batch is sized for (a judge prompt holds the template and an answer)
MEMORY_SHARE = 0.8  # of the free GPU memory, what a batch may plan on (the rest: activations, logits, fragmentation)
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Device:
    """Where generation runs: 'cpu' or 'cuda', with the GPU's free memory in bytes (0 on a CPU)."""

    kind: str
    free_bytes: int = 0
    name: str = "cpu"

    def to_json(self) -> dict:
        return {"kind": self.kind, "name": self.name, "free_gib": round(self.free_bytes / 2**30, 1)}


def local_device() -> Device:
    """This process's device: the current CUDA GPU if torch sees one, else the CPU."""
    import torch

    if not torch.cuda.is_available():
        return Device("cpu")
    free, _ = torch.cuda.mem_get_info()
    return Device("cuda", free, torch.cuda.get_device_name())


def resolve_engine(config, models: list[ModelRef], samplings: list[Sampling], *other_backends: str,
                   device: Callable[[], Device] = local_device):
    """The config with its `auto` dtype and batch size made concrete for the device that generates (asked for only
    when one of them is `auto`). `other_backends`: those of other roles (a judge on its own backend)."""
    found = functools.cache(device)
    dtype = resolve_dtype(config.dtype, lambda: found().kind == "cuda")
    backends = (config.backend, *other_backends)
    return replace(config, dtype=dtype, batch_size=resolve_batch_size(config.batch_size, backends, found, models, dtype, samplings))


def resolve_batch_size(batch_size: int | str, backends: tuple[str, ...], device: Callable[[], Device], models: list[ModelRef],
                       dtype: str, samplings: list[Sampling]) -> int:
    """The number of requests per generate call: the one given, or `auto` sized to the device (module docstring) for
    the most demanding backend used. On a GPU: the local models that generate, and the requests a batch holds."""
    batch_size = parse_batch_size(batch_size)
    if batch_size != AUTO:
        return batch_size
    if "transformers" not in backends:
        return VLLM_BATCH if "vllm" in backends else OPENAI_BATCH
    gpu = device()
    if gpu.kind != "cuda":
        return CPU_BATCH
    return min([GPU_BATCH] + [fits_in_memory(m, dtype, gpu.free_bytes, samplings) for m in models if m.path is not None])


def fits_in_memory(model: ModelRef, dtype: str, free_bytes: int, samplings: list[Sampling]) -> int:
    """The largest power of two of requests whose key/value cache fits next to the weights (at least 1). A model
    whose config names no layer and head counts is not bounded here."""
    per_token = kv_bytes_per_token(model, dtype)
    if per_token is None:
        return GPU_BATCH
    rows = max(s.n * (PROMPT_TOKENS + s.max_new_tokens) for s in samplings)
    budget = free_bytes * MEMORY_SHARE - weights_bytes(model, dtype)
    fitting = int(budget // (rows * per_token)) if budget > 0 else 0
    return 1 << max(fitting.bit_length() - 1, 0)


def kv_bytes_per_token(model: ModelRef, dtype: str) -> int | None:
    """Keys and values of every layer for one token, from the model's config.json."""
    config = model_config(model).get("text_config") or model_config(model)
    layers, heads, hidden = config.get("num_hidden_layers"), config.get("num_attention_heads"), config.get("hidden_size")
    if not (layers and heads and hidden):
        return None
    head_dim = config.get("head_dim") or hidden // heads
    return 2 * layers * (config.get("num_key_value_heads") or heads) * head_dim * DTYPE_BYTES.get(dtype, 4)


def weights_bytes(model: ModelRef, dtype: str) -> int:
    """The weights' size on the GPU, from their files (stored in float32 and loaded in half precision: half of it)."""
    stored = sum(f.stat().st_size for pattern in ("*.safetensors", "*.bin") for f in model.path.glob(pattern))
    config = model_config(model)
    stored_dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    return stored * DTYPE_BYTES.get(dtype, 4) // DTYPE_BYTES.get(stored_dtype, 4)


def model_config(model: ModelRef) -> dict:
    try:
        return json.loads((model.path / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def engine_identity(backend: str, dtype: str, batch_size: int, *other_backends: str) -> dict:
    """What of the engine a version's identity holds: the batch size only where it decides answers (the transformers
    backend generates, for the policy or any other role), and then as the number used."""
    decides = "transformers" in (backend, *other_backends)
    return {"backend": backend, "dtype": dtype} | ({"batch_size": batch_size} if decides else {})
