"""The options that choose and tune a generation backend, shared by every command that generates."""

import dataclasses
import functools
import math
from dataclasses import dataclass

import click

from builder.core.errors import BuilderError

BACKENDS = ("transformers", "vllm", "openai")
DTYPES = ("auto", "bfloat16", "float16", "float32")  # auto: see generators.resolve_dtype



class FiniteFloat(click.ParamType):
    """A float option that refuses NaN and the infinities: no sampling knob, timeout or rate means anything
    at either, and a NaN would reach the manifest as JSON it is not."""

    name = "float"

    def convert(self, value, param, ctx):
        if isinstance(value, float) and math.isfinite(value):
            return value
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


FINITE_FLOAT = FiniteFloat()


def require_finite(config) -> None:
    """The same rule for configurations that do not come through the command line (recipes)."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise BuilderError(f"--{field.name.replace('_', '-')} must be a finite number, not {value}")

dtype_option = click.option("--dtype", type=click.Choice(DTYPES), default="auto", show_default=True, help="auto: bfloat16 on a GPU, float32 on a CPU")


@dataclass(frozen=True)
class EngineOptions:
    """Backend settings that change speed, not answers; none of them goes into a cache key."""

    endpoints: tuple[str, ...] = ()  # openai
    max_concurrency: int = 8  # openai: requests in flight per endpoint
    request_timeout: float = 600.0  # openai: seconds per call
    max_retries: int = 5  # openai: further tries of a failed call
    api_key_env: str = "OPENAI_API_KEY"  # openai: the variable holding the key (never the key itself)
    tensor_parallel_size: int = 1  # vllm
    max_model_len: int | None = None  # vllm

    def check(self, backend: str) -> None:
        require_finite(self)
        if self.endpoints and backend != "openai":
            raise BuilderError("--endpoint needs --backend openai")
        if backend == "openai" and not self.endpoints:
            raise BuilderError("--backend openai needs at least one --endpoint URL")
        if backend != "vllm" and (self.tensor_parallel_size != 1 or self.max_model_len is not None):
            raise BuilderError("--tensor-parallel-size and --max-model-len need --backend vllm")
        if self.tensor_parallel_size < 1 or (self.max_model_len is not None and self.max_model_len < 1):
            raise BuilderError("--tensor-parallel-size and --max-model-len must be at least 1")


_OPTIONS = [
    click.option("--backend", type=click.Choice(BACKENDS), default="transformers", show_default=True,
                 help="transformers (in-process), vllm (in-process engine), openai (OpenAI-compatible servers)"),
    click.option("--endpoint", "endpoints", multiple=True, help="openai: a server's API root, e.g. http://127.0.0.1:8000/v1; repeat for a pool"),
    click.option("--max-concurrency", type=int, default=8, show_default=True, help="openai: requests in flight per endpoint"),
    click.option("--request-timeout", type=FINITE_FLOAT, default=600.0, show_default=True, help="openai: seconds per call"),
    click.option("--max-retries", type=int, default=5, show_default=True, help="openai: retries of a call that failed (429, 5xx, connection)"),
    click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True, help="openai: environment variable with the API key"),
    click.option("--tensor-parallel-size", type=int, default=1, show_default=True, help="vllm: GPUs per model"),
    click.option("--max-model-len", type=int, default=None, help="vllm: context length [default: the model's]"),
]
_FIELDS = ("endpoints", "max_concurrency", "request_timeout", "max_retries", "api_key_env", "tensor_parallel_size", "max_model_len")


_JUDGE_OPTIONS = [
    click.option("--judge-backend", type=click.Choice(BACKENDS), default=None,
                 help="The judge's own backend [default: --backend; openai when --judge-endpoint is given]"),
    click.option("--judge-endpoint", "judge_endpoints", multiple=True, help="openai: a server for the judge alone, e.g. a hosted API; repeat for a pool"),
    click.option("--judge-api-key-env", default="OPENAI_API_KEY", show_default=True, help="openai: environment variable with the judge's API key"),
]


def judge_engine(backend: str, options: EngineOptions, judge_backend: str | None, judge_options: EngineOptions | None) -> tuple[str, EngineOptions]:
    """The judge's backend and options: its own where given, the policy's otherwise."""
    return (judge_backend, judge_options or EngineOptions()) if judge_backend else (backend, options)


def backend_options(command):
    """Adds the backend options; the command receives `backend` and one `engine_options` (EngineOptions)."""

    @functools.wraps(command)
    def gather(*args, **kwargs):
        options = EngineOptions(**{name: kwargs.pop(name) for name in _FIELDS})
        options.check(kwargs["backend"])
        return command(*args, engine_options=options, **kwargs)

    for option in reversed(_OPTIONS):
        gather = option(gather)
    return gather


def judge_backend_options(command):
    """Adds the judge's own backend options (after backend_options); the command receives `judge_backend` (None:
    the policy's) and `judge_engine_options`. Concurrency, timeout and retries are shared with the policy's."""

    @functools.wraps(command)
    def gather(*args, **kwargs):
        backend, endpoints, key_env = kwargs.pop("judge_backend"), kwargs.pop("judge_endpoints"), kwargs.pop("judge_api_key_env")
        options = None
        if endpoints and backend not in (None, "openai"):
            raise BuilderError("--judge-endpoint needs --judge-backend openai")
        backend = backend or ("openai" if endpoints else None)
        if backend == "openai" and not endpoints:
            raise BuilderError("--judge-backend openai needs at least one --judge-endpoint URL")
        if backend is not None:
            shared = kwargs["engine_options"]
            options = EngineOptions(endpoints, shared.max_concurrency, shared.request_timeout, shared.max_retries, key_env)
            options.check(backend)
        return command(*args, judge_backend=backend, judge_engine_options=options, **kwargs)

    for option in reversed(_JUDGE_OPTIONS):
        gather = option(gather)
    return gather
