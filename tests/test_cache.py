"""The generation cache: lookups by join, compaction that keeps every row, and a kill at any point that leaves a
readable cache with nothing lost."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from builder.core.cache import GenerationCache, shard_level
from builder.core.records import Completion, Request, Sampling


def request(key: str, n: int = 2) -> Request:
    return Request(key, ({"role": "user", "content": key},), Sampling(n), 0)


def answers_for(key: str, n: int = 2) -> list[Completion]:
    return [Completion(f"{key} answer {i}", "stop", i + 1) for i in range(n)]


def save(cache: GenerationCache, keys: list[str]) -> None:
    cache.save([request(k) for k in keys], [answers_for(k) for k in keys])


def test_a_lookup_returns_exactly_the_requested_keys_in_sample_order(tmp_path):
    cache = GenerationCache(tmp_path)
    assert cache.load({"a"}) == {} and cache.cached_keys(["a"]) == set()
    save(cache, ["a", "b"])
    save(cache, ["c"])
    assert cache.load(["a", "c", "missing"]) == {"a": answers_for("a"), "c": answers_for("c")}
    assert cache.cached_keys(["b", "c", "d"]) == {"b", "c"}
    table = cache.table(pl.Series(["c", "a", "a"]))
    assert table.columns == ["key", "sample", "text", "finish_reason", "n_tokens", "choice_probs"]
    assert table.select("key", "sample").rows() == [("a", 0), ("a", 1), ("c", 0), ("c", 1)]
    assert cache.load([]) == {}


def test_compaction_keeps_the_shard_count_small_and_every_row(tmp_path):
    cache = GenerationCache(tmp_path, fan_in=4)
    keys = [f"k{i:03d}" for i in range(100)]
    for key in keys:
        save(cache, [key])
        levels = [shard_level(s) for s in cache.shards()]
        assert all(levels.count(level) < 4 for level in set(levels))
    assert len(cache.shards()) <= 3 * 4  # 100 shards in base 4 is three levels deep
    assert max(shard_level(s) for s in cache.shards()) == 3
    assert cache.load(keys) == {k: answers_for(k) for k in keys}
    assert pl.read_parquet(cache.shards()).height == 200  # nothing duplicated either


def test_duplicated_rows_across_shards_are_read_once(tmp_path):
    cache = GenerationCache(tmp_path, fan_in=100)
    save(cache, ["a", "b"])
    save(cache, ["b", "c"])  # b answered twice (two processes racing): its rows are read once
    rows = pl.read_parquet(cache.shards())
    assert rows.height == 8
    assert cache.table(["a", "b", "c"]).height == 6
    assert cache.load(["b"]) == {"b": answers_for("b")}


def test_a_compaction_stopped_before_deleting_its_inputs_leaves_a_readable_cache(tmp_path, monkeypatch):
    cache = GenerationCache(tmp_path, fan_in=3)
    save(cache, ["a"])
    save(cache, ["b"])
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        save(cache, ["c"])  # the merged shard is in place; its three inputs are still there
    monkeypatch.undo()
    assert sorted(shard_level(s) for s in cache.shards()) == [0, 0, 0, 1]
    assert cache.load(["a", "b", "c"]) == {k: answers_for(k) for k in "abc"}
    save(cache, ["d"])  # the next compaction deletes the leftovers, which the merged shard names
    assert sorted(shard_level(s) for s in cache.shards()) == [0, 1]
    assert cache.load(["a", "b", "c", "d"]) == {k: answers_for(k) for k in "abcd"}
    assert pl.read_parquet(cache.shards()).height == 8  # no row left twice


def test_a_compaction_killed_while_writing_leaves_a_partial_file_that_nothing_reads(tmp_path):
    cache = GenerationCache(tmp_path, fan_in=100)
    save(cache, ["a"])
    (tmp_path / ".L1-0123.parquet.partial-999").write_bytes(b"PAR1 cut short")
    assert cache.load(["a"]) == {"a": answers_for("a")}


SAVER = """
import sys
from pathlib import Path
from builder.core.cache import GenerationCache
from builder.core.records import Completion, Request, Sampling
cache = GenerationCache(Path(sys.argv[1]), fan_in=3)
for i in range(100_000):
    key = f"k{i:06d}"
    cache.save([Request(key, (), Sampling(1), 0)], [[Completion(key, "stop", 1)]])
    print(key, flush=True)
"""


@pytest.mark.parametrize("saves_before_kill", [5, 26, 81])
def test_a_process_killed_at_any_point_loses_no_saved_row(tmp_path, saves_before_kill):
    process = subprocess.Popen([sys.executable, "-c", SAVER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    saved = [process.stdout.readline().strip() for _ in range(saves_before_kill)]
    process.send_signal(signal.SIGKILL)
    process.wait()
    cache = GenerationCache(tmp_path, fan_in=3)
    found = cache.load(saved + ["never"])
    assert set(found) == set(saved) and all(found[k] == [Completion(k, "stop", 1)] for k in saved)
    save(cache, ["after"])  # and the cache goes on working, with no row left twice by a merge the kill cut short
    assert set(cache.cached_keys(saved + ["after"])) == set(saved) | {"after"}
    assert pl.read_parquet(cache.shards()).select("key", "sample").is_unique().all()


@pytest.mark.parametrize("messages", [[{"role": "user", "content": "hi"}], [{"content": "é \"q\" \n ✓ 🙂", "role": "user"}], []])
def test_request_keys_are_the_stable_hash_of_the_request_they_always_were(messages):
    # Keys name cached answers: a change here would orphan every cache. They must stay this exact hash.
    from dataclasses import asdict

    from builder.core.records import make_request, stable_hash

    identity, sampling = {"model": "sha256:ab", "backend": "transformers", "batch_size": 16}, Sampling(4, 0.7, 0.9, 256)
    expected = stable_hash({"generator": identity, "messages": messages, "sampling": asdict(sampling), "seed": 7})
    assert make_request(identity, messages, sampling, 7).key == expected
