"""The openai backend's pure parts, its retries against a fault-injecting server on 127.0.0.1, and bad backend
options through the CLI."""

import json
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import run_builder

from builder.core.errors import BuilderError
from builder.core.records import Request, Sampling
from builder.engines.models import ModelRef
from builder.engines.openai_pool import (
    OpenAIPoolGenerator,
    PoolHealth,
    RetryableError,
    base_url,
    give_up_reason,
    parse_choices,
    parse_retry_after,
    request_body,
    retry_delay,
    to_completions,
    top_up_plan,
    topup_seed,
)

# Trimmed from a real answer of vLLM 0.32's OpenAI server (n=3, max_tokens=20, SmolLM2-135M-Instruct).
VLLM_ANSWER = {
    "object": "chat.completion",
    "choices": [
        {"index": 1, "message": {"role": "assistant", "content": "The fruit that has a name, but a more fitting description is the Fruit of Life, which is"}, "finish_reason": "length"},
        {"index": 0, "message": {"role": "assistant", "content": "While there are numerous fruits that can be categorized as fruits, a more precise classification can be made by"}, "finish_reason": "length"},
        {"index": 2, "message": {"role": "assistant", "content": " The fruit I mentioned earlier is the Kiwi."}, "finish_reason": "stop"},
    ],
    "usage": {"prompt_tokens": 31, "total_tokens": 81, "completion_tokens": 50},
}


def test_choices_are_read_in_index_order_with_their_finish_reasons():
    choices, usage = parse_choices(VLLM_ANSWER)
    assert [c.text[:5] for c in choices] == ["While", "The f", " The "] and usage == 50
    completions = to_completions(choices, usage, count_tokens=None)
    assert [c.finish_reason for c in completions] == ["length", "length", "stop"]
    assert completions[2].text == "The fruit I mentioned earlier is the Kiwi."
    assert sum(c.n_tokens for c in completions) == 50  # split by length when only the total is known
    assert [c.n_tokens for c in to_completions(choices, usage, count_tokens=len)] == [len(c.text.strip()) for c in choices]
    assert to_completions(choices[:1], 20, count_tokens=len)[0].n_tokens == 20  # one choice: usage is exact


def test_top_up_asks_for_the_rest_and_gives_up_after_n_calls():
    assert top_up_plan(4, 0, 0, 4) == 4
    assert top_up_plan(4, 1, 1, 4) == 3
    assert top_up_plan(4, 4, 2, 4) == 0
    with pytest.raises(RetryableError):
        top_up_plan(4, 2, 4, 4)
    assert len({topup_seed(123, r) for r in range(4)}) == 4


def test_request_body_is_greedy_with_one_choice_and_seeds_fit_every_server():
    request = Request("k", ({"role": "user", "content": "hi"},), Sampling(3, 0.0, 0.9, 8), 2**60 + 5)
    body = request_body("m", request, 3, request.seed)
    assert body["n"] == 1 and body["temperature"] == 0.0 and "top_p" not in body and 0 <= body["seed"] < 2**31
    sampled = request_body("m", Request("k", request.messages, Sampling(3, 0.7, 0.9, 8), 1), 2, 1)
    assert (sampled["n"], sampled["top_p"], sampled["max_tokens"]) == (2, 0.9, 8)


def test_calls_in_flight_when_an_endpoint_fails_count_as_one_failure():
    health = PoolHealth(("a", "b"))
    for started in (0.0, 0.1, 0.2):  # three calls open when "a" dropped them at t=1
        health.failed("a", started, 1.0)
    assert health.streak == {"a": 1, "b": 0}
    health.failed("a", 1.5, 2.0)  # a call started after that failure is a new one
    assert health.streak["a"] == 2
    health.answered("a")
    assert health.streak["a"] == 0


def test_a_run_gives_up_on_a_dead_pool_or_a_request_that_keeps_failing():
    health = PoolHealth(("a", "b"))
    assert give_up_reason(health, attempt=0, max_retries=2) is None
    assert "one request failed 3 times" in give_up_reason(health, attempt=2, max_retries=2)
    for t in range(3):
        health.failed("a", t, t + 0.5)
    assert give_up_reason(health, attempt=0, max_retries=2) is None  # "b" still answers
    for t in range(3):
        health.failed("b", t, t + 0.5)
    assert "every endpoint failed 3 times in a row" in give_up_reason(health, attempt=0, max_retries=2)


def test_endpoint_urls_mean_the_api_root():
    assert base_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1"
    assert base_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/v1"
    with pytest.raises(BuilderError):
        base_url("127.0.0.1:8000")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--endpoint", "http://127.0.0.1:9/v1"], "--endpoint needs --backend openai"),
        (["--backend", "openai"], "needs at least one --endpoint"),
        (["--backend", "openai", "--endpoint", "http://127.0.0.1:9/v1"], "no endpoint answered"),
        (["--backend", "openai", "--endpoint", "localhost:9"], "not an http(s) URL"),
        (["--tensor-parallel-size", "2"], "need --backend vllm"),
        (["--backend", "vllm"], "pip install"),  # the main environment has no vLLM
    ],
)
def test_bad_backend_options_end_with_one_line(tiny_model, tmp_path, args, message):
    result = run_builder("make-pairs", "--model", tiny_model, "--limit", "1", "--store", tmp_path, *args)
    assert result.returncode == 2, result.stderr[-1000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_retry_after_is_read_as_seconds_or_an_http_date():
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("3", now) == 3.0 and parse_retry_after(" 2.5 ", now) == 2.5
    assert parse_retry_after(format_datetime(now + timedelta(seconds=7), usegmt=True), now) == 7.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=7), usegmt=True), now) == 0.0  # already past
    assert parse_retry_after("-4", now) == 0.0 and parse_retry_after("86400", now) == 300.0  # a day is cut to 5 minutes
    assert parse_retry_after(None) is None and parse_retry_after("") is None and parse_retry_after("soon") is None


def test_backoff_is_full_jitter_under_a_growing_ceiling_and_honours_retry_after():
    rng = random.Random(0)
    for streak, ceiling in [(1, 0.5), (2, 1.0), (4, 4.0), (20, 30.0)]:
        delays = [retry_delay(streak, None, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays) and max(delays) > 0.8 * ceiling and min(delays) < 0.2 * ceiling
    asked = [retry_delay(3, 5.0, rng) for _ in range(200)]
    assert all(5.0 <= d <= 5.5 for d in asked) and len(set(asked)) == 200


class FaultyServer:
    """An OpenAI-compatible server on 127.0.0.1 whose first `failures` chat calls fail with `status` (and a
    `Retry-After` header from `retry_after()`, if given); then it answers every call, after `answer_delay`
    seconds. It records when each chat call arrived."""

    def __init__(self, failures: int, status: int = 429, retry_after=None, answer_delay: float = 0.0):
        self.failures, self.status, self.retry_after, self.answer_delay = failures, status, retry_after, answer_delay
        self.calls: list[tuple[float, int]] = []  # (arrival time, status sent)
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status: int, payload: dict, headers: dict | None = None):
                body = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self.reply(200, {"data": [{"id": "served-model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    failing = len(server.calls) < server.failures
                    server.calls.append((time.monotonic(), server.status if failing else 200))
                if failing:
                    headers = {"Retry-After": server.retry_after()} if server.retry_after else {}
                    return self.reply(server.status, {"error": {"message": "slow down"}}, headers)
                time.sleep(server.answer_delay)
                text = body["messages"][-1]["content"]
                choices = [{"index": i, "message": {"content": f"{text} #{i}"}, "finish_reason": "stop"} for i in range(body["n"])]
                self.reply(200, {"choices": choices, "usage": {"completion_tokens": 2 * body["n"]}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def __enter__(self) -> "FaultyServer":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def pool(server: FaultyServer, concurrency: int) -> OpenAIPoolGenerator:
    return OpenAIPoolGenerator(ModelRef("served-model", None, "served:test"), (server.url,), max_concurrency=concurrency, max_retries=5)


def ask(generator: OpenAIPoolGenerator, count: int) -> list:
    requests = [Request(f"k{i}", ({"role": "user", "content": f"q{i}"},), Sampling(2, 0.7, 0.9, 8), i) for i in range(count)]
    return generator.generate(requests)


@pytest.mark.parametrize("header", ["seconds", "http-date"])
def test_no_call_reaches_a_server_before_its_retry_after_has_passed(header):
    # An HTTP date has one-second resolution: "2 s from now" means a wait of 1 to 2 s.
    value = (lambda: "1") if header == "seconds" else (lambda: format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True))
    with FaultyServer(failures=2, status=429, retry_after=value) as server:
        answers = ask(pool(server, concurrency=3), 3)
    assert [a[1].text for a in answers] == ["q0 #1", "q1 #1", "q2 #1"]
    # three workers, three requests: the first three calls are the first wave, the two after them are retries,
    # whichever worker sends them
    assert [status for _, status in server.calls] == [429, 429, 200, 200, 200]
    assert min(t for t, _ in server.calls[3:]) >= server.calls[0][0] + 0.95


def test_workers_refused_together_do_not_come_back_in_lock_step():
    # Answers take 0.1 s, so that the four retries are sent by four workers, at the times each one woke.
    with FaultyServer(failures=4, status=503, answer_delay=0.1) as server:
        generator = pool(server, concurrency=4)
        generator.backoff = 0.4
        ask(generator, 4)
    assert [status for _, status in server.calls[:4]] == [503] * 4
    retries = sorted(t for t, status in server.calls[4:])
    assert len(retries) == 4 and retries[-1] - retries[0] > 0.02  # spread out, not one burst
