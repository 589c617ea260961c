"""The openai backend's pure parts, and bad backend options through the CLI (no server needed)."""

import pytest
from conftest import run_builder

from builder.core.errors import BuilderError
from builder.core.records import Request, Sampling
from builder.engines.openai_pool import (
    PoolHealth,
    RetryableError,
    base_url,
    give_up_reason,
    parse_choices,
    request_body,
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
