"""A pool of OpenAI-compatible chat servers (vLLM's, llama.cpp's, hosted APIs) as one Generator.

Requests go through one shared queue; each endpoint takes from it with `max_concurrency` workers, so a
faster server simply answers more. A failed call (connection error, timeout, 429, 5xx) goes back on the
queue for any endpoint while that endpoint rests: for as long as its `Retry-After` header says (seconds or an
HTTP date, at most 5 minutes), else a random time up to an exponential ceiling ("full jitter", so that
workers never retry in lock-step); a request that fails
`max_retries + 1` times, a pool whose every endpoint has failed more than `max_retries` times in a row, or
any other HTTP error, ends the run. Answers are handed to the caller one by one as they complete, so the
cache keeps them even when a server dies mid-run.

The API key is read from the environment at call time and lives only in a request header.
"""

import asyncio
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from builder.core.errors import BuilderError
from builder.core.progress import console
from builder.core.records import Completion, Constraint, Request
from builder.engines.choice_probs import TOP_LOGPROBS, choice_probs
from builder.engines.context import ContextWindow, local_window, unknown_window
from builder.engines.models import ModelRef

OnAnswer = Callable[[Request, list[Completion]], None]
RETRYABLE_STATUS = {408, 409, 425, 429} | set(range(500, 600))
SEED_RANGE = 2**31  # llama.cpp takes a uint32 seed; vLLM any int64: this range means the same everywhere
MAX_RETRY_AFTER = 300.0  # seconds: a longer wait asked by a server is cut to this


class RetryableError(Exception):
    """A call worth trying again: the server was unreachable, overloaded or failed; `retry_after` is the
    wait in seconds the server asked for, if it did."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delay-seconds or an HTTP date; None when absent or unreadable."""
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def retry_delay(streak: int, retry_after: float | None, rng: random.Random, base: float = 0.5, cap: float = 30.0) -> float:
    """How long an endpoint rests after its streak-th failure in a row. Without Retry-After: full jitter, a uniform
    draw below min(cap, base · 2^(streak-1)). With it: the server's wait plus a uniform draw below `base`, so
    that the workers it stopped do not all come back at the same instant."""
    if retry_after is not None:
        return retry_after + rng.uniform(0, base)
    return rng.uniform(0, min(cap, base * 2 ** max(streak - 1, 0)))


@dataclass(frozen=True)
class Choice:
    text: str
    finish_reason: str | None
    positions: tuple = ()  # per token: (its text, {alternative text: logprob}) when logprobs were asked for


def base_url(endpoint: str) -> str:
    """`http://host:8000` and `http://host:8000/v1/` both mean the API root `http://host:8000/v1`."""
    url = endpoint.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise BuilderError(f"--endpoint {endpoint!r} is not an http(s) URL")
    return url if url.count("/") > 2 else url + "/v1"


def request_body(model: str, request: Request, n: int, seed: int) -> dict:
    sampling = request.sampling
    body = {"model": model, "messages": list(request.messages), "max_tokens": sampling.max_new_tokens, "seed": seed % SEED_RANGE}
    if sampling.temperature > 0:
        body |= {"n": n, "temperature": sampling.temperature, "top_p": sampling.top_p}
    else:
        body |= {"n": 1, "temperature": 0.0}
    return body | constraint_body(request.constraint)


def constraint_body(constraint: Constraint | None) -> dict:
    """vLLM's server takes the regex as `structured_outputs` (its older `guided_regex` is now ignored without
    a word, which is why support is checked first: see server_guided_decoding); logprobs for the choices."""
    if constraint is None:
        return {}
    body = {"logprobs": True, "top_logprobs": TOP_LOGPROBS} if constraint.choices else {}
    if constraint.regex is not None:
        body["structured_outputs"] = {"regex": constraint.regex}
    return body


def topup_seed(seed: int, round_index: int) -> int:
    """Seed of the round-th extra call for a request (round 0 is the first call)."""
    return (seed + round_index * 1_000_003) % SEED_RANGE


def parse_choices(payload: dict) -> tuple[list[Choice], int | None]:
    """The choices of a chat completion response and the completion tokens of all of them together."""
    choices = [
        Choice((c.get("message") or {}).get("content") or "", c.get("finish_reason"), token_positions(c.get("logprobs")))
        for c in sorted(payload.get("choices") or [], key=lambda c: c.get("index", 0))
    ]
    return choices, (payload.get("usage") or {}).get("completion_tokens")


def token_positions(logprobs: dict | None) -> tuple:
    content = (logprobs or {}).get("content") or []
    return tuple(
        (t.get("token") or "", {a["token"]: a["logprob"] for a in t.get("top_logprobs") or [] if "token" in a and "logprob" in a}
         | {t.get("token") or "": t.get("logprob", float("-inf"))})
        for t in content
    )


def to_completions(
    choices: list[Choice], usage_tokens: int | None, count_tokens: Callable[[str], int] | None, probed: tuple[str, ...] = ()
) -> list[Completion]:
    """Token counts: exact from `usage` for a single choice; otherwise the model's tokenizer when it is local,
    else `usage` split by character length (an estimate; hosted APIs report only the total)."""
    texts = [c.text.strip() for c in choices]
    if len(choices) == 1 and usage_tokens is not None:
        counts = [usage_tokens]
    elif count_tokens is not None:
        counts = [count_tokens(t) for t in texts]
    else:
        total_chars = sum(len(t) for t in texts) or 1
        counts = [round((usage_tokens or 0) * len(t) / total_chars) for t in texts]
    return [
        Completion(text, "length" if c.finish_reason == "length" else "stop", n,
                   choice_probs(text, list(c.positions), probed) if probed and c.positions else None)
        for text, c, n in zip(texts, choices, counts, strict=True)
    ]


def top_up_plan(wanted: int, received: int, round_index: int, max_rounds: int) -> int:
    """How many choices to ask for next: a server may return fewer than `n` (llama.cpp returns one)."""
    if received >= wanted:
        return 0
    if round_index >= max_rounds:
        raise RetryableError(f"server returned {received} of {wanted} choices after {round_index} calls")
    return wanted - received


class PoolHealth:
    """Failures of each endpoint since its last answer. Calls that were already in flight when an endpoint
    failed count once together: a server that drops its 8 open connections at once has failed once, not 8
    times, so a dead pool is declared only after the backoff has really been waited out."""

    def __init__(self, endpoints: tuple[str, ...]):
        self.streak = dict.fromkeys(endpoints, 0)
        self.last_failure = dict.fromkeys(endpoints, float("-inf"))
        self.resume_at = dict.fromkeys(endpoints, float("-inf"))  # no call to an endpoint before this time

    def rest(self, endpoint: str, until: float) -> None:
        self.resume_at[endpoint] = max(self.resume_at[endpoint], until)

    def failed(self, endpoint: str, call_started: float, now: float) -> None:
        if call_started > self.last_failure[endpoint]:
            self.streak[endpoint] += 1
            self.last_failure[endpoint] = now

    def answered(self, endpoint: str) -> None:
        self.streak[endpoint] = 0

    def all_dead(self, max_retries: int) -> bool:
        return all(n > max_retries for n in self.streak.values())


def give_up_reason(health: PoolHealth, attempt: int, max_retries: int) -> str | None:
    """Why a run stops retrying, or None to retry: one request failed too often, or every endpoint has."""
    if health.all_dead(max_retries):
        return f"every endpoint failed {max_retries + 1} times in a row"
    if attempt >= max_retries:
        return f"one request failed {attempt + 1} times"
    return None


def one_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class OpenAIPoolGenerator:
    def __init__(
        self,
        model: ModelRef,
        endpoints: tuple[str, ...],
        max_concurrency: int = 8,
        request_timeout: float = 600.0,
        max_retries: int = 5,
        api_key_env: str = "OPENAI_API_KEY",
        max_choices_per_call: int | None = None,
    ):
        if not endpoints:
            raise BuilderError("--backend openai needs at least one --endpoint URL")
        if max_concurrency < 1 or max_retries < 0 or request_timeout <= 0:
            raise BuilderError("--max-concurrency must be at least 1, --max-retries at least 0, --request-timeout positive")
        self.endpoints = tuple(dict.fromkeys(base_url(e) for e in endpoints))
        self.max_concurrency = max_concurrency
        self.timeout = httpx.Timeout(request_timeout, connect=min(10.0, request_timeout))
        self.max_retries = max_retries
        self.backoff = 0.5  # seconds: the ceiling of the first rest after a failure; doubles up to 30 s
        self.rng = random.Random()  # jitter only: answers depend on the requests' seeds, never on this
        self.api_key_env = api_key_env
        self.max_choices_per_call = max_choices_per_call
        self.names = served_names(model, self.endpoints, self._headers(), self.timeout)
        self.count_tokens, self.context = local_tokenizer(model)
        # Endpoint URLs and served names are left out on purpose: servers of the same weights share one cache.
        # A served name (a hosted model) is in the fingerprint itself.
        self.identity = {"backend": "openai", "model": model.fingerprint}

    def _headers(self) -> dict:
        key = os.environ.get(self.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def generate(self, requests: list[Request]) -> list[list[Completion]]:
        answers: dict[str, list[Completion]] = {}
        self.generate_streaming(requests, lambda request, completions: answers.__setitem__(request.key, completions))
        return [answers[r.key] for r in requests]

    def generate_streaming(self, requests: list[Request], on_answer: OnAnswer) -> None:
        """Answer every request, calling on_answer(request, completions) as each one completes."""
        if requests:
            asyncio.run(self._run(requests, on_answer))

    async def _run(self, requests: list[Request], on_answer: OnAnswer) -> None:
        queue: asyncio.Queue[tuple[Request, int]] = asyncio.Queue()
        for request in requests:
            queue.put_nowait((request, 0))
        remaining = {"count": len(requests)}
        finished = asyncio.Event()
        failure: list[BaseException] = []
        limits = httpx.Limits(max_connections=self.max_concurrency * len(self.endpoints))
        async with httpx.AsyncClient(timeout=self.timeout, limits=limits, headers=self._headers()) as client:

            async def worker(endpoint: str) -> None:
                try:
                    await serve(endpoint)
                except Exception as error:  # anything but a retryable call ends the whole run
                    failure.append(error)
                    finished.set()

            health = PoolHealth(self.endpoints)
            received: dict[str, tuple[list[Completion], int]] = {}  # choices of requests not yet complete

            async def serve(endpoint: str) -> None:
                loop = asyncio.get_running_loop()
                while not finished.is_set():
                    request, attempt = await queue.get()
                    if (wait := health.resume_at[endpoint] - loop.time()) > 0:  # resting: leave it to others
                        queue.put_nowait((request, attempt))
                        await asyncio.sleep(wait + self.rng.uniform(0, self.backoff))
                        continue
                    started = loop.time()
                    try:
                        completions = await self._answer(client, endpoint, request, received)
                    except RetryableError as error:
                        health.failed(endpoint, started, loop.time())
                        if reason := give_up_reason(health, attempt, self.max_retries):
                            raise BuilderError(f"{endpoint}: {error}; gave up: {reason} (--max-retries {self.max_retries})") from None
                        queue.put_nowait((request, attempt + 1))
                        delay = retry_delay(health.streak[endpoint], error.retry_after, self.rng, self.backoff)
                        if loop.time() + delay > health.resume_at[endpoint]:
                            asked = " as the server asked" if error.retry_after is not None else ""
                            console.print(f"[yellow]{endpoint}: {error}; retrying, the endpoint rests {delay:.1f} s{asked}[/]")
                        health.rest(endpoint, loop.time() + delay)
                        continue
                    health.answered(endpoint)
                    on_answer(request, completions)
                    remaining["count"] -= 1
                    if remaining["count"] == 0:
                        finished.set()

            workers = [asyncio.create_task(worker(e)) for e in self.endpoints for _ in range(self.max_concurrency)]
            try:
                await finished.wait()
            finally:
                for task in workers:
                    task.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
        if failure:
            raise failure[0]

    async def _answer(self, client: httpx.AsyncClient, endpoint: str, request: Request, received: dict) -> list[Completion]:
        """The request's n choices, topping up a server that returns fewer. Choices already received for it
        (`received`, by request key, with the number of calls made) are kept when a later call fails: a retry
        asks only for the rest, with the seeds an uninterrupted run would have used."""
        wanted = request.sampling.n if request.sampling.temperature > 0 else 1
        completions, round_index = received.get(request.key, ([], 0))
        calls = 0
        while ask := top_up_plan(wanted, len(completions), calls, max_rounds=wanted):
            ask = min(ask, self.max_choices_per_call or ask)
            body = request_body(self.names[endpoint], request, ask, topup_seed(request.seed, round_index))
            payload = await post_json(client, f"{endpoint}/chat/completions", body)
            choices, usage_tokens = parse_choices(payload)
            probed = request.constraint.choices if request.constraint else ()
            completions = completions + to_completions(choices[:ask], usage_tokens if len(choices) <= ask else None, self.count_tokens, probed)
            round_index, calls = round_index + 1, calls + 1
            received[request.key] = (completions, round_index)
        received.pop(request.key, None)
        if request.sampling.temperature == 0:  # greedy: one answer, n copies keep the shape callers expect
            completions = completions * request.sampling.n
        return completions


async def post_json(client: httpx.AsyncClient, url: str, body: dict) -> dict:
    try:
        response = await client.post(url, json=body)
    except httpx.TransportError as error:
        raise RetryableError(f"{type(error).__name__}: {one_line(str(error)) or 'no answer'}") from None
    if response.status_code in RETRYABLE_STATUS:
        raise RetryableError(f"HTTP {response.status_code}", parse_retry_after(response.headers.get("retry-after")))
    if response.status_code != 200:
        raise BuilderError(f"{url}: HTTP {response.status_code}: {error_message(response)}")
    try:
        return response.json()
    except ValueError:
        raise RetryableError("the answer was not JSON") from None


def error_message(response: httpx.Response) -> str:
    try:
        detail = response.json().get("error") or response.json()
        detail = detail.get("message", detail) if isinstance(detail, dict) else detail
    except ValueError:
        detail = response.text
    return one_line(str(detail))


def served_names(model: ModelRef, endpoints: tuple[str, ...], headers: dict, timeout: httpx.Timeout) -> dict[str, str]:
    """The name to send as `model` to each endpoint: the spec itself for a served name; for a local model,
    the one model each server lists (vLLM names a model after its launch path, which differs by server).
    An endpoint down at start keeps the name most others use and joins the pool when it answers."""
    listed: dict[str, list[str]] = {}
    problems = []
    for endpoint in endpoints:
        try:
            response = httpx.get(f"{endpoint}/models", headers=headers, timeout=timeout)
            response.raise_for_status()
            listed[endpoint] = [m["id"] for m in response.json().get("data", [])]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
            problems.append(f"{endpoint} ({type(error).__name__})")
    if not listed:
        raise BuilderError(f"no endpoint answered GET /models: {', '.join(problems)}")
    if problems:
        console.print(f"[yellow]not answering now, kept in the pool: {', '.join(problems)}[/]")
    names = {endpoint: served_name(model, endpoint, found) for endpoint, found in listed.items()}
    usual = max(set(names.values()), key=list(names.values()).count)
    return {endpoint: names.get(endpoint, usual) for endpoint in endpoints}


def served_name(model: ModelRef, endpoint: str, listed: list[str]) -> str:
    if model.path is None:
        if listed and model.spec not in listed:
            raise BuilderError(f"{endpoint} does not serve {model.spec!r} (it serves: {', '.join(listed[:10])})")
        return model.spec
    local = [n for n in listed if n in (model.spec, str(model.path))]
    if local or len(listed) == 1:
        return (local or listed)[0]
    raise BuilderError(
        f"cannot tell which model {endpoint} serves is {model.spec!r} (it serves: {', '.join(listed[:10]) or 'nothing'}); "
        "pass the served name as --model"
    )


def server_guided_decoding(endpoints: tuple[str, ...], headers: dict, timeout: httpx.Timeout) -> dict | None:
    """Structured outputs when every endpoint is a vLLM server (it answers GET /version); None otherwise, and
    the judge then writes free text that only the parser reads. Other servers ignore or refuse the field, and
    one that ignored it would pass free text off as constrained."""
    versions = set()
    if not endpoints:
        return None
    for endpoint in endpoints:
        try:
            response = httpx.get(f"{endpoint.removesuffix('/v1')}/version", headers=headers, timeout=timeout)
            response.raise_for_status()
            versions.add(str(response.json()["version"]))
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None
    return {"library": "vllm server", "version": ",".join(sorted(versions)), "api": "structured_outputs.regex",
            "closes_before_token_limit": False}


def local_tokenizer(model: ModelRef) -> tuple[Callable[[str], int] | None, ContextWindow]:
    """A token counter and the context window, from local weights' tokenizer and config; for a served model
    name neither is known (the servers may also run with a shorter --max-model-len than the config's)."""
    if model.path is None:
        return None, unknown_window(f"a served model ({model.spec}) whose context length the builder cannot know")
    from transformers import AutoConfig, AutoTokenizer

    from builder.core.progress import quiet_transformers

    quiet_transformers()
    try:
        tokenizer = AutoTokenizer.from_pretrained(model.path)
        config = AutoConfig.from_pretrained(model.path)
    except (OSError, ValueError):
        return None, unknown_window(f"no tokenizer or config could be read from {model.path}")
    return (lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])), local_window(tokenizer, config)
