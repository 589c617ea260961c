"""The knobs that choose a model and tune a generation backend, shared by every stage that generates."""

from dataclasses import dataclass

from builder.core.errors import BuilderError
from builder.core.knobs import knob

BACKENDS = ("transformers", "vllm", "openai")
DTYPES = ("auto", "bfloat16", "float16", "float32")  # auto: see generators.resolve_dtype
AUTO = "auto"  # --batch-size auto: see batching.py


def parse_batch_size(value: int | str) -> int | str:
    """'auto' or a positive whole number (as typed, or from a recipe); anything else is a one-line error."""
    if value == AUTO:
        return AUTO
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BuilderError(f"--batch-size must be auto or a positive whole number (got {value!r})")
    return value


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
        if self.endpoints and backend != "openai":
            raise BuilderError("--endpoint needs --backend openai")
        if backend == "openai" and not self.endpoints:
            raise BuilderError("--backend openai needs at least one --endpoint URL")
        if backend != "vllm" and (self.tensor_parallel_size != 1 or self.max_model_len is not None):
            raise BuilderError("--tensor-parallel-size and --max-model-len need --backend vllm")


@dataclass(frozen=True, kw_only=True)
class ModelKnobs:
    model: str | None = knob(None, "A local folder, a registered name (M1, M2…), a Hub id[@rev], or the embedded default "
                                   "[default: smollm2-135m-instruct]", short="-m")


@dataclass(frozen=True, kw_only=True)
class EngineKnobs:
    seed: int = knob(0, "Random seed: every sampled request, split and shuffle follows from it")
    backend: str = knob("transformers", "transformers (in-process), vllm (in-process engine), openai (OpenAI-compatible servers)",
                        choices=BACKENDS)
    batch_size: int | str = knob("auto", "Requests per generate call; auto: sized to the device (16 on a CPU, up to 128 on a GPU as "
                                          "its free memory allows, 1024 for vllm), the number used is in the manifest")
    dtype: str = knob("auto", "auto: bfloat16 on a GPU, float32 on a CPU", choices=DTYPES)
    endpoints: tuple[str, ...] = knob((), "openai: a server's API root, e.g. http://127.0.0.1:8000/v1; repeat for a pool", flag="--endpoint")
    max_concurrency: int = knob(8, "openai: requests in flight per endpoint", rule="positive")
    request_timeout: float = knob(600.0, "openai: seconds per call", rule="positive")
    max_retries: int = knob(5, "openai: retries of a call that failed (429, 5xx, connection)", rule="non_negative")
    api_key_env: str = knob("OPENAI_API_KEY", "openai: environment variable with the API key")
    tensor_parallel_size: int = knob(1, "vllm: GPUs per model", rule="positive")
    max_model_len: int | None = knob(None, "vllm: context length [default: the model's]", rule="positive")

    @property
    def engine_options(self) -> EngineOptions:
        return EngineOptions(tuple(self.endpoints), self.max_concurrency, self.request_timeout, self.max_retries,
                             self.api_key_env, self.tensor_parallel_size, self.max_model_len)

    def check_engine(self) -> None:
        parse_batch_size(self.batch_size)
        self.engine_options.check(self.backend)


@dataclass(frozen=True, kw_only=True)
class JudgeModelKnobs:
    """A judge that is another model, or the same model on another backend (a hosted API, say)."""

    judge: str | None = knob(None, "Judge model, a spec like --model [default: the policy judges itself]", short="-j")
    judge_backend: str | None = knob(None, "The judge's own backend [default: --backend; openai when --judge-endpoint is given]",
                                     choices=BACKENDS)
    judge_endpoints: tuple[str, ...] = knob((), "openai: a server for the judge alone, e.g. a hosted API; repeat for a pool",
                                            flag="--judge-endpoint")
    judge_api_key_env: str = knob("OPENAI_API_KEY", "openai: environment variable with the judge's API key")

    def judge_engine(self) -> tuple[str, EngineOptions]:
        """The judge's backend and options: its own where given (concurrency, timeout and retries shared with the
        policy's), the policy's otherwise."""
        backend = self.judge_backend
        if self.judge_endpoints and backend not in (None, "openai"):
            raise BuilderError("--judge-endpoint needs --judge-backend openai")
        backend = backend or ("openai" if self.judge_endpoints else None)
        if backend is None:
            return self.backend, self.engine_options
        if backend == "openai" and not self.judge_endpoints:
            raise BuilderError("--judge-backend openai needs at least one --judge-endpoint URL")
        shared = self.engine_options
        options = EngineOptions(tuple(self.judge_endpoints), shared.max_concurrency, shared.request_timeout, shared.max_retries,
                                self.judge_api_key_env)
        options.check(backend)
        return backend, options


@dataclass(frozen=True, kw_only=True)
class SamplingKnobs:
    temperature: float = knob(0.7, "Sampling temperature (0: greedy)", rule="non_negative")
    top_p: float = knob(0.9, "Nucleus sampling: keep the smallest set of tokens whose probability reaches this", rule="probability")
    max_new_tokens: int = knob(256, "Length limit of each generated answer, in tokens", rule="positive")
