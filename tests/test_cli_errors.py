"""Bad input through the real CLI: one line on stderr, exit status 2, never a traceback."""

import pytest
from conftest import run_builder

FILES = {
    "empty.jsonl": b"",
    "broken.jsonl": b'{"prompt": "a"}\n{oops\n',
    "columns.jsonl": b'{"question": "a"}\n',
    "latin1.jsonl": '{"prompt": "caf\u00e9"}\n'.encode("latin-1"),
    "broken.csv": b'prompt\n"x\n',
    "null_content.jsonl": b'{"messages": [{"role": "user", "content": null}]}\n',
}
CASES = {
    "missing model folder": (["--model", "/no/such/model"], "unknown model"),
    "unknown hub model offline": (["--model", "nobody/nothing"], "cannot get model"),
    "empty prompts file": (["--prompts", "empty.jsonl"], "is empty"),
    "malformed jsonl": (["--prompts", "broken.jsonl"], "cannot read broken.jsonl"),
    "wrong columns": (["--prompts", "columns.jsonl"], "needs a 'prompt' or 'messages' column"),
    "non-UTF-8": (["--prompts", "latin1.jsonl"], "not valid UTF-8"),
    "malformed csv": (["--prompts", "broken.csv"], "cannot read broken.csv"),
    "missing prompts": (["--prompts", "missing.jsonl"], "no such file"),
    "unknown version as prompts": (["--prompts", "pairs-000000000000"], "no such file"),
    "one sample": (["--n-samples", "1"], "at least 2"),
    "not a number": (["--n-samples", "four"], "Invalid value for '--n-samples'"),
    "top-p out of range": (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
    "negative temperature": (["--temperature", "-1"], "must not be negative"),
    "missing judge template": (["--judge-template", "nope.txt"], "cannot read judge template"),
    "judge endpoint off openai": (["--judge-backend", "vllm", "--judge-endpoint", "http://127.0.0.1:9/v1"], "--judge-endpoint needs --judge-backend openai"),
    "judge on openai, no endpoint": (["--judge-backend", "openai"], "needs at least one --judge-endpoint"),
    "null message content": (["--prompts", "null_content.jsonl"], "needs a text role and content"),
    "temperature nan": (["--temperature", "nan"], "'nan' is not a finite number"),
    "temperature inf": (["--temperature", "inf"], "'inf' is not a finite number"),
    "judge temperature nan": (["--judge-temperature", "nan"], "--judge-temperature"),
    "top-p -inf": (["--top-p", "-inf"], "is not a finite number"),
    "request timeout nan": (["--request-timeout", "nan"], "--request-timeout"),
    "request timeout inf": (["--request-timeout", "inf"], "'inf' is not a finite number"),
}


@pytest.mark.parametrize(
    "command",
    [
        ["make-eft", "--held-out", "nan"],
        ["make-prompts", "--similarity", "inf"],
        ["eval", "head-to-head", "--a", "x", "--b", "y", "--judge-temperature", "nan"],
        ["train", "dpo", "--base", "x", "--data", "x", "--name", "x", "--beta", "inf"],
    ],
)
def test_every_float_option_refuses_nan_and_infinities(tmp_path, command):
    assert_one_line_error(run_builder(*command, "--store", tmp_path / "store"), "is not a finite number")


@pytest.fixture
def bad_files(tmp_path):
    for name, content in FILES.items():
        (tmp_path / name).write_bytes(content)
    return tmp_path


def assert_one_line_error(result, expected: str):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize("args, expected", CASES.values(), ids=CASES.keys())
def test_make_pairs_rejects_bad_input(bad_files, args, expected):
    result = run_builder("make-pairs", *args, "--store", bad_files / "store", cwd=bad_files)
    assert_one_line_error(result, expected)
    assert not list((bad_files / "store").glob("pairs-*"))


@pytest.mark.parametrize("command", [["show", "pairs-nope"], ["verify", "pairs-nope"], ["query", "SELECT 1 FROM pairs"]])
def test_commands_on_an_empty_store(tmp_path, command):
    result = run_builder(*command, "--store", tmp_path / "store")
    assert_one_line_error(result, "store")


def test_an_unknown_command_is_one_line(tmp_path):
    assert_one_line_error(run_builder("make-pears"), "No such command")
