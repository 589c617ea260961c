import json

import polars as pl
import pytest

from builder.core.errors import BuilderError
from builder.core.prompts import load_prompts, sample_prompts_path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_shipped_sample_prompts_load():
    prompts, dropped, source = load_prompts(None)
    assert prompts.height >= 16 and dropped.height == 0
    assert source.kind == "file" and source.fingerprint.startswith("sha256:")
    assert prompts["source_id"][0] == "sample-000"
    assert str(sample_prompts_path()) == source.spec


def test_jsonl_csv_parquet_give_the_same_prompts(tmp_path):
    rows = [{"prompt": "Name a colour."}, {"prompt": "Say hi."}]
    jsonl = write_jsonl(tmp_path / "p.jsonl", rows)
    pl.DataFrame(rows).write_csv(tmp_path / "p.csv")
    pl.DataFrame(rows).write_parquet(tmp_path / "p.parquet")
    frames = [load_prompts(str(p))[0] for p in (jsonl, tmp_path / "p.csv", tmp_path / "p.parquet")]
    assert all(f["prompt_id"].to_list() == frames[0]["prompt_id"].to_list() for f in frames)


def test_chat_messages_drop_the_reference_answer(tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."}]}])
    prompts, _, _ = load_prompts(str(path))
    assert prompts["prompt"].item() == "Capital of France?"
    assert [m["role"] for m in prompts["messages"].item()] == ["system", "user"]


def test_empty_and_duplicate_prompts_are_dropped_with_reasons(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "A?"}, {"prompt": "  "}, {"prompt": "A?"}, {"prompt": "B?"}])
    prompts, dropped, _ = load_prompts(str(path))
    assert prompts["prompt"].to_list() == ["A?", "B?"]
    assert sorted(dropped["reason"].to_list()) == ["duplicate_prompt", "empty_prompt"]


def test_limit(tmp_path):
    prompts, _, _ = load_prompts(None, limit=3)
    assert prompts.height == 3


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b'{"text": "no prompt column"}\n', "needs a 'prompt' or 'messages' column"),
        (b'{"prompt": "ok"}\n{broken\n', "cannot read"),
        (b'{"prompt": "caf\xe9"}\n', "not valid UTF-8"),
        (b'{"messages": [{"role": "assistant", "content": "hi"}, {"role": "assistant", "content": "x"}]}\n', "must end with a non-empty user turn"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(BuilderError, match=message) as error:
        load_prompts(str(path))
    assert "\n" not in str(error.value)


def test_unknown_source():
    with pytest.raises(BuilderError, match="no such file"):
        load_prompts("does-not-exist.jsonl")


def test_saved_datasets_folder(tmp_path):
    from datasets import Dataset

    Dataset.from_list([{"prompt": "One?"}, {"prompt": "Two?"}]).save_to_disk(tmp_path / "ds")
    prompts, _, source = load_prompts(str(tmp_path / "ds"))
    assert prompts["prompt"].to_list() == ["One?", "Two?"] and source.kind == "datasets"
