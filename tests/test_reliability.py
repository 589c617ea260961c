"""Nothing lost, nothing written where it must not be: half-written versions, the store lock, the sealed
query engine, disk and permission faults, the score line, prompts longer than the context, and ids that
name exactly one content. Faults a test cannot cause for real (a full disk at one exact write) are injected
into a real `builder` process."""

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import polars as pl
import pytest
from conftest import run_builder

from builder.core.manifest import Manifest
from builder.core.records import Completion
from builder.core.stage import StageOutput, build_version
from builder.core.store import Store

FAST = ["--n-samples", "2", "--n-judgments", "2", "--max-new-tokens", "8", "--judge-max-new-tokens", "16", "--batch-size", "2"]


def one_line_error(result, expected: str = "") -> None:
    """Exit status 2 and one line of error, last; a fault in the middle of a run may follow the progress bars
    of the work it saved (`candidates 2/4`), never a traceback."""
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error: ")]
    assert errors == lines[-1:] and expected in lines[-1], result.stderr[-2000:]
    assert all(" eta " in line for line in lines[:-1]) and "Traceback" not in result.stderr, result.stderr[-2000:]


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def small_version(store: Store, kind: str = "pairs", seed: int = 0, rows: int = 3):
    """A real version written through the store, without a model: a `pairs` table and a manifest."""
    identity = {"input": "test", "seed": seed}
    tables = {"pairs": pl.DataFrame({"prompt_id": [f"p{i}" for i in range(rows)], "score_margin": [1.0] * rows})}
    output = StageOutput(tables, Manifest(kind, seed=seed), lambda m, t: f"# {m.id}\n")
    return build_version(store, kind, identity, lambda vid: output)[0]


def prompts_file(folder: Path, prompts: list[str], name: str = "prompts.jsonl") -> Path:
    path = folder / name
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return path


def shards(store: Path) -> list[Path]:
    return sorted((store / ".cache" / "generations").glob("*/*.parquet"))


# 1. Half-written versions are never versions, and are cleaned once their process is gone.


def test_a_partial_folder_with_a_manifest_is_not_a_version(tmp_path):
    from builder.app.query import run_query

    store = Store(tmp_path / "store")
    version = small_version(store)
    shutil.copytree(version.folder, store.root / f".partial-{version.id}-{dead_pid()}")
    assert [v.id for v in store.versions()] == [version.id]
    assert store.find(version.id[:8]) == version.folder
    assert run_query(store, "SELECT count(*) AS n FROM pairs")["n"].to_list() == [3]  # not 6
    assert run_builder("ls", "--store", store.root, check=True).stdout.count("pairs-") == 1


def test_leftovers_of_dead_runs_are_removed_and_live_ones_kept(tmp_path):
    store = Store(tmp_path / "store")
    version = small_version(store)
    gone, alive = dead_pid(), os.getpid()
    cache = store.root / ".cache" / "generations" / "abc"
    cache.mkdir(parents=True)
    leftovers = [store.root / f".partial-{version.id}-{gone}", cache / f"0123.partial-{gone}"]
    running = [store.root / f".partial-pairs-000000000000-{alive}", cache / f"4567.partial-{alive}"]
    for path in leftovers + running:
        path.mkdir() if path.name.startswith(".") else path.write_bytes(b"half")
    assert sorted(store.stale_partials()) == sorted(leftovers)
    repaired = run_builder("verify", "--repair", "--store", store.root, check=True)
    assert "removed 2 leftovers" in repaired.stdout
    assert not any(p.exists() for p in leftovers) and all(p.exists() for p in running)
    assert run_builder("verify", version.id, "--repair", "--store", store.root).returncode == 0


def test_writing_a_version_again_removes_its_dead_partial(tmp_path):
    store = Store(tmp_path / "store")
    stale = store.root / f".partial-{Manifest('pairs', identity={'input': 'test', 'seed': 0}).expected_id()}-{dead_pid()}"
    stale.mkdir(parents=True)
    small_version(store, seed=0)
    assert store.versions() and not stale.exists()


# 2. One configuration is built by one process at a time.


def test_the_lock_is_per_version(tmp_path):
    store = Store(tmp_path / "store")
    holder = subprocess.Popen(
        [sys.executable, "-c", ("import sys, time\nfrom builder.core.store import Store\n"
                                "with Store(sys.argv[1]).lock('pairs-a'):\n    print('held', flush=True)\n    time.sleep(3)"),
         str(store.root)],
        stdout=subprocess.PIPE, text=True, env=os.environ.copy(),
    )
    assert holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    with store.lock("pairs-b"):  # another configuration: no wait
        assert time.monotonic() - started < 1
    with store.lock("pairs-a"):  # the same one: waits for the holder
        assert time.monotonic() - started > 1.5
    holder.wait()


def test_two_runs_of_one_configuration_build_it_once(tiny_model, tmp_path):
    """Two real processes on one store, one typing the prompts' path relative and the other absolute."""
    prompts = prompts_file(tmp_path, [f"Name thing number {i}." for i in range(4)])
    store = tmp_path / "store"
    common = ["make-pairs", "--model", tiny_model, "--store", store, *FAST]
    command = [sys.executable, "-c", "from builder.app.cli import main; main()"]
    runs = [
        subprocess.Popen([*command, *map(str, common), "--prompts", "prompts.jsonl"], cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy()),
        subprocess.Popen([*command, *map(str, common), "--prompts", str(prompts)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy()),
    ]
    results = [(run.wait(timeout=600), *run.communicate()) for run in runs]
    assert [code for code, _, _ in results] == [0, 0], [err[-2000:] for _, _, err in results]
    ids = {out.strip().splitlines()[-1] for _, out, _ in results}
    assert len(ids) == 1
    messages = sorted("already built" in err for _, _, err in results)
    assert messages == [False, True], [err[-500:] for _, _, err in results]
    rows = pl.read_parquet(shards(store))
    assert rows.select("key", "sample").is_unique().all(), "a request was answered twice"
    assert not list(store.glob(".partial-*"))
    (version,) = ids
    source = pl.read_parquet(store / version / "prompts.parquet")["source"].unique().to_list()
    assert source == ["sha256:" + __import__("hashlib").sha256(prompts.read_bytes()).hexdigest()]


# 3. `builder query` reads the versions' files and nothing else.

FORBIDDEN = {
    "copy over a version file": "COPY (SELECT 1 AS x) TO '{version}/pairs.parquet' (FORMAT parquet)",
    "copy over the manifest": "COPY (SELECT 1 AS x) TO '{version}/manifest.json'",
    "copy anywhere": "COPY (SELECT 1 AS x) TO '{outside}/out.csv'",
    "export": "EXPORT DATABASE '{outside}/export'",
    "attach a new file": "ATTACH '{outside}/new.duckdb' AS new",
    "read the password file": "SELECT * FROM read_text('/etc/passwd')",
    "read_csv outside": "SELECT * FROM read_csv('/etc/passwd')",
    "read a cache shard": "SELECT * FROM read_parquet('{store}/.cache/generations/*/*.parquet')",
    "glob the disk": "SELECT * FROM glob('/*')",
    "create a table": "CREATE TABLE t AS SELECT 1",
    "insert": "INSERT INTO pairs VALUES ('x', 1.0)",
    "drop a view": "DROP VIEW pairs",
    "unlock": "SET enable_external_access = true",
    "widen the paths": "SET allowed_directories = ['/']",
    "install an extension": "INSTALL httpfs",
    "load an extension": "LOAD httpfs",
    "pragma": "PRAGMA enable_profiling",
    "a select then a copy": "SELECT 1; COPY (SELECT 1) TO '{outside}/x.csv'",
}


@pytest.mark.parametrize("sql", FORBIDDEN.values(), ids=FORBIDDEN.keys())
def test_a_query_can_only_read_the_store(tmp_path, sql):
    store = Store(tmp_path / "store")
    version = small_version(store)
    outside = tmp_path / "outside"
    outside.mkdir()
    before = {p.name: p.read_bytes() for p in version.folder.iterdir()}
    result = run_builder("query", "--store", store.root,
                         sql.format(version=version.folder.resolve(), outside=outside, store=store.root.resolve()))
    one_line_error(result, "query")
    assert {p.name: p.read_bytes() for p in version.folder.iterdir()} == before
    assert not list(outside.iterdir())
    assert run_builder("verify", version.id, "--store", store.root).returncode == 0


def test_a_query_still_reads_the_versions_and_their_manifests(tmp_path):
    store = Store(tmp_path / "store")
    version = small_version(store)
    result = run_builder("query", "--store", store.root, "--format", "csv",
                         f"SELECT (SELECT count(*) FROM pairs) AS n, (SELECT count(*) FROM read_text('{version.folder.resolve()}/manifest.json')) AS m",
                         check=True)
    assert result.stdout.splitlines()[1] == "3,1"


def test_attached_hub_versions_are_the_only_remote_folders_allowed():
    import duckdb

    from builder.app.query import LocatedVersion, seal

    connection = duckdb.connect()
    seal(connection, [LocatedVersion("pairs-x", Manifest("pairs"), "hf://datasets/user/name@pairs-x")])
    allowed = connection.execute("SELECT current_setting('allowed_directories')").fetchone()[0]
    assert "hf://datasets/user/name@pairs-x/" in allowed
    with pytest.raises(duckdb.Error):
        connection.sql("SELECT * FROM read_text('hf://datasets/user/other@t/manifest.json')").fetchall()


# 4. The machine's faults: one line, exit 2, nothing already saved lost.

FAULT = """
import errno, sys
import polars as pl
where = sys.argv.pop(1)
original = pl.DataFrame.write_parquet
calls = []
def write_parquet(self, path, *args, writer=None, **kwargs):
    if where in str(path):
        calls.append(path)
        if len(calls) == 2:
            open(path, "wb").write(b"half a file")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
    return writer(self, path) if writer else original(self, path, *args, **kwargs)
pl.DataFrame.write_parquet = write_parquet
import builder.core.store as store_module
write_table = store_module.write_table
def failing_write_table(table, path):  # a version's tables are written through pyarrow
    write_parquet(table, path, writer=write_table)
store_module.write_table = failing_write_table
write_parts = store_module.write_parts
def failing_write_parts(table, folder, name):  # a sharded stage's tables are copied from their parts
    return write_parquet(None, folder / f"{name}.parquet", writer=lambda _, path: write_parts(table, folder, name))
store_module.write_parts = failing_write_parts
from builder.app.cli import main
main()
"""


def run_with_full_disk(where: str, *args) -> subprocess.CompletedProcess:
    """A real run whose second parquet write to a path containing `where` fails with ENOSPC."""
    return subprocess.run([sys.executable, "-c", FAULT, where, *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=os.environ.copy(), check=False)


def test_a_full_disk_at_a_cache_shard_keeps_the_shards_before(tiny_model, tmp_path):
    store = tmp_path / "store"
    args = ["make-pairs", "--model", tiny_model, "--prompts", prompts_file(tmp_path, ["One?", "Two?", "Three?", "Four?"]),
            "--store", store, *FAST]
    failed = run_with_full_disk("generations", *args)
    one_line_error(failed, "No space left on device")
    kept = {p: p.read_bytes() for p in shards(store)}
    assert kept and not list(store.rglob("*.partial-*")) and not list(store.glob("pairs-*"))
    run_builder(*args, check=True)
    assert all(p.read_bytes() == content for p, content in kept.items()), "a saved shard was rewritten"


def test_a_full_disk_at_the_version_write_loses_nothing(tiny_model, tmp_path):
    store = tmp_path / "store"
    args = ["make-pairs", "--model", tiny_model, "--prompts", prompts_file(tmp_path, ["One?", "Two?"]), "--store", store, *FAST]
    failed = run_with_full_disk(".partial-pairs-", *args)
    one_line_error(failed, "No space left on device")
    assert not list(store.glob("pairs-*")) and not list(store.glob(".partial-*"))
    cached = shards(store)
    assert cached
    rerun = run_builder(*args, check=True)
    assert "built" in rerun.stderr and shards(store) == cached, "the rerun generated again"


def unprivileged() -> list[str]:
    """A command prefix that runs without root's power over permissions (root reads a chmod-000 file)."""
    if os.geteuid() != 0:
        return []
    probe = subprocess.run(["unshare", "--user", "--map-user=1000", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("running as root without user namespaces: permissions cannot be tested for real")
    return ["unshare", "--user", "--map-user=1000"]


def run_as(prefix: list[str], *args) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-c", "from builder.app.cli import main; main()", *map(str, args)],
                          capture_output=True, text=True, timeout=600, env=os.environ.copy(), check=False)


def test_a_real_full_disk_is_one_line(tiny_model, tmp_path):
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True, check=False).returncode:
        pytest.skip("no user and mount namespaces to mount a small tmpfs in")
    store = tmp_path / "store"
    store.mkdir()
    prompts = prompts_file(tmp_path, [f"Name thing number {i}." for i in range(8)])
    builder = f"{sys.executable} -c 'from builder.app.cli import main; main()'"
    script = (f"mount -t tmpfs -o size=64k tmpfs {store} && head -c 57344 /dev/zero > {store}/ballast && "
              f"{builder} make-pairs --model {tiny_model} --prompts {prompts} --store {store} {' '.join(FAST)}")
    result = subprocess.run(["unshare", "-r", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=600, env=os.environ.copy(), check=False)
    one_line_error(result, "No space left on device")


def test_a_read_only_store_is_one_line_before_any_work(tiny_model, tmp_path):
    prefix = unprivileged()
    store = Store(tmp_path / "store")
    version = small_version(store)
    store.root.chmod(0o555)
    try:
        result = run_as(prefix, "make-pairs", "--model", tiny_model, "--prompts", prompts_file(tmp_path, ["One?"]),
                        "--store", store.root, *FAST)
        one_line_error(result, "is not writable")
        assert run_as(prefix, "query", "--store", store.root, "SELECT count(*) FROM pairs").returncode == 0
        assert run_as(prefix, "verify", version.id, "--store", store.root).returncode == 0
    finally:
        store.root.chmod(0o755)


def test_an_unreadable_weights_file_is_one_line(tiny_model, tmp_path):
    prefix = unprivileged()
    model = shutil.copytree(tiny_model, tmp_path / "model")
    weights = next(model.glob("*.safetensors"))
    weights.chmod(0)
    result = run_as(prefix, "make-pairs", "--model", model, "--store", tmp_path / "store", "--limit", "1")
    one_line_error(result, "cannot read model file")


def test_a_store_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "store").write_text("not a folder")
    for command in (["ls"], ["make-pairs", "--limit", "1"], ["query", "SELECT 1"]):
        one_line_error(run_builder(*command, "--store", tmp_path / "store"), "is a file, not a folder")


@pytest.mark.parametrize("command", ["show", "verify"])
def test_a_manifest_that_is_not_json_is_one_line(tmp_path, command):
    store = Store(tmp_path / "store")
    version = small_version(store)
    manifest = version.folder / "manifest.json"
    manifest.chmod(0o644)
    manifest.write_text('{"id": "pairs-')
    one_line_error(run_builder(command, version.id, "--store", store.root), "is not valid JSON")


def test_a_null_message_content_is_one_line(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "system", "content": None}, {"role": "user", "content": "Hi?"}]}) + "\n")
    one_line_error(run_builder("make-pairs", "--prompts", path, "--store", tmp_path / "store"), "row 0: message 0 needs a text role and content")


# 5. A failed top-up keeps what it received.


class OneChoiceServer(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible server that returns one choice per call and fails the second call once."""

    calls: ClassVar[list[dict]] = []

    def do_GET(self):
        self.reply(200, {"data": [{"id": "served"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append(body)
        if len(self.calls) == 2:
            self.reply(500, {"error": {"message": "overloaded"}})
        else:
            self.reply(200, {"choices": [{"index": 0, "message": {"content": f"seed {body['seed']}"}, "finish_reason": "stop"}],
                             "usage": {"completion_tokens": 2}})

    def reply(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_a_failed_top_up_keeps_the_choices_received():
    from builder.core.records import Sampling, make_request
    from builder.engines.models import ModelRef
    from builder.engines.openai_pool import OpenAIPoolGenerator, topup_seed

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), OneChoiceServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        pool = OpenAIPoolGenerator(ModelRef("served", None, "served:served"), (f"http://127.0.0.1:{server.server_port}",), max_concurrency=1)
        pool.backoff = 0.01
        request = make_request(pool.identity, [{"role": "user", "content": "Hi?"}], Sampling(3, 0.7, 0.9, 8), 0)
        (answer,) = pool.generate([request])
    finally:
        server.shutdown()
    seeds = [call["seed"] for call in OneChoiceServer.calls]
    assert len(seeds) == 4, seeds  # 1 answered, 1 failed, then only the 2 missing: the first choice is not asked again
    assert seeds == [topup_seed(request.seed, r) for r in (0, 1, 1, 2)]
    assert [c.text for c in answer] == [f"seed {topup_seed(request.seed, r)}" for r in range(3)]


# 6. The score line.


@pytest.mark.parametrize("line", ["Score: ５", "Score: ٣", "Score: ३", "Score: 4.9999999999999999", "Score: 4.5", "Score: 10", "ſcore: 4"])
def test_only_an_exact_ascii_whole_number_is_a_score(line):
    from builder.judging.judge import parse_judgment

    assert parse_judgment(Completion(f"Fine.\n{line}", "stop", 5)).score is None


@pytest.mark.parametrize("line, score", [("Score: 4", 4), ("**Score: 04**", 4), ("Score: 3.0", 3), ("score : 0/5.", 0), ("Score: 5 points", 5)])
def test_the_accepted_score_forms(line, score):
    from builder.judging.judge import parse_judgment

    assert parse_judgment(Completion(f"Fine.\n{line}", "stop", 5)).score == score


@pytest.mark.parametrize("last_line", ["Score: 4" + " " * 65536 + "x", "Score:" + " " * 65536 + "x", " " * 65536 + "Score: 4" + "*" * 65536 + "x"])
def test_a_long_last_line_is_read_in_linear_time(last_line):
    from builder.judging.judge import parse_judgment
    from builder.judging.pairwise import parse_verdict

    started = time.perf_counter()
    parse_judgment(Completion("Fine.\n" + last_line, "stop", 5))
    parse_verdict(Completion("Fine.\n" + last_line.replace("Score", "Verdict"), "stop", 5))
    parse_verdict(Completion("Verdict: [1]" + " " * 65536 + "x", "stop", 5))
    assert time.perf_counter() - started < 0.1


def test_the_verdict_line_is_ascii_only():
    from builder.judging.pairwise import parse_verdict

    assert parse_verdict(Completion("x\nVerdict: ２", "stop", 5)).preferred is None
    assert parse_verdict(Completion("x\n**Final verdict: [Response 2]**", "stop", 5)).preferred == "2"


# 7. Prompts longer than the context are dropped before any generation.


def test_prompts_too_long_for_the_context_are_dropped_and_counted(tiny_model, tmp_path):
    long_prompt = "Name thing number one. " * 700  # about 4,000 tokens for a 1,024-position model
    huge_prompt = "x" * 1_000_000  # 1 MB: refused without tokenizing
    prompts = prompts_file(tmp_path, ["Name thing number 1.", long_prompt, huge_prompt, "Name thing number 2."])
    store = tmp_path / "store"
    started = time.monotonic()
    result = run_builder("make-pairs", "--model", tiny_model, "--prompts", prompts, "--store", store, *FAST, check=True)
    assert time.monotonic() - started < 300
    version = result.stdout.strip().splitlines()[-1]
    manifest = json.loads((store / version / "manifest.json").read_text())
    assert manifest["stats"]["drops"]["prompt:too_long_for_context"] == 2
    assert manifest["extra"]["context"]["policy"] == {"length": 1024}
    dropped = pl.read_parquet(store / version / "dropped.parquet").filter(pl.col("reason") == "too_long_for_context")
    assert dropped.height == 2 and all("policy" in d for d in dropped["detail"])
    assert pl.read_parquet(store / version / "prompts.parquet").height == 2
    assert pl.read_parquet(store / version / "candidates.parquet").height == 4  # the long ones were never answered
    assert run_builder("verify", version, "--store", store).returncode == 0


def test_a_served_model_skips_the_context_check_and_says_so():
    from builder.engines.context import unknown_window

    window = unknown_window("a served model")
    assert window.overflow([{"role": "user", "content": "x" * 10**6}], 256) is None
    assert window.to_json() == {"length": None, "check": "skipped: a served model"}


# 8. The id names exactly the manifest's identity.


def test_verify_fails_on_an_edited_manifest(tmp_path):
    store = Store(tmp_path / "store")
    version = small_version(store, seed=7)
    assert run_builder("verify", version.id, "--store", store.root).returncode == 0
    manifest = version.folder / "manifest.json"
    edited = json.loads(manifest.read_text())
    edited["identity"]["seed"] = 8
    manifest.chmod(0o644)
    manifest.write_text(json.dumps(edited))
    one_line_error(run_builder("verify", version.id, "--store", store.root), "the manifest was edited")


def test_seed_and_sft_versions_recompute_their_ids(tmp_path):
    """The kinds that need no model; pairs are verified above, eft, rm and prompts in test_seed.py, h2h in
    test_eval.py."""
    from test_seed import OASST, write_jsonl

    store = tmp_path / "store"
    seed = run_builder("import-oasst", write_jsonl(tmp_path / "oasst.jsonl", OASST), "--store", store, check=True)
    sft = run_builder("mix-sft", "--store", store, check=True)
    for built in (seed, sft):
        assert run_builder("verify", built.stdout.strip().splitlines()[-1], "--store", store).returncode == 0
