"""Every bad input and machine fault of issue 16, through the real CLI: does each end with one line on stderr
and exit status 2, without a traceback?

    python bench/bad_inputs.py --model <a small local chat model folder, e.g. the tests' tiny model>

Faults that need a real full disk or a non-root user use `unshare` (user and mount namespaces) when it is
there; a full disk at one exact write is injected (OSError ENOSPC) into a real process.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BUILDER = [sys.executable, "-c", "from builder.app.cli import main; main()"]
FAST = ["--n-samples", "2", "--n-judgments", "2", "--max-new-tokens", "8", "--judge-max-new-tokens", "16", "--batch-size", "2"]
FULL_DISK = """
import errno, sys
import polars as pl
where = sys.argv.pop(1)
original, calls = pl.DataFrame.write_parquet, []
def write_parquet(self, path, *args, writer=None, **kwargs):
    if where in str(path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
    return writer(self, path) if writer else original(self, path, *args, **kwargs)
pl.DataFrame.write_parquet = write_parquet
import builder.core.store as store_module
write_table = store_module.write_table
def failing_write_table(table, path):  # a version's tables are written through pyarrow
    write_parquet(table, path, writer=write_table)
store_module.write_table = failing_write_table
from builder.app.cli import main
main()
"""


def write_version(store: Path) -> str:
    import polars as pl

    from builder.core.manifest import Manifest
    from builder.core.stage import StageOutput, build_version
    from builder.core.store import Store

    tables = {"pairs": pl.DataFrame({"prompt_id": ["p"], "score_margin": [1.0]})}
    output = StageOutput(tables, Manifest("pairs"), lambda m, t: "# card\n")
    return build_version(Store(store), "pairs", {"input": "bench", "seed": 7}, lambda vid: output)[0].id


def cases(model: Path, work: Path) -> dict[str, list[str]]:
    prompts = work / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Name thing {i}."}) + "\n" for i in range(4)))
    null_chat = work / "null.jsonl"
    null_chat.write_text(json.dumps({"messages": [{"role": "system", "content": None}, {"role": "user", "content": "Hi"}]}) + "\n")
    (work / "file-store").write_text("x")
    store = work / "store"
    vid = write_version(store)
    broken = work / "broken-store"
    bad_id = write_version(broken)
    (broken / bad_id / "manifest.json").chmod(0o644)
    (broken / bad_id / "manifest.json").write_text("{not json")
    edited = work / "edited-store"
    edited_id = write_version(edited)
    manifest = json.loads((edited / edited_id / "manifest.json").read_text())
    manifest["identity"]["seed"] = 8
    (edited / edited_id / "manifest.json").chmod(0o644)
    (edited / edited_id / "manifest.json").write_text(json.dumps(manifest))
    unreadable = Path(shutil.copytree(model, work / "unreadable-model"))
    next(unreadable.glob("*.safetensors")).chmod(0)
    read_only = work / "read-only-store"
    write_version(read_only)
    read_only.chmod(0o555)
    make = ["make-pairs", "--model", str(model), "--prompts", str(prompts), *FAST]
    found = {
        "null content in a chat message": [*BUILDER, "make-pairs", "--prompts", str(null_chat), "--store", str(store)],
        "store path is a file (make-pairs)": [*BUILDER, *make, "--store", str(work / "file-store")],
        "store path is a file (ls)": [*BUILDER, "ls", "--store", str(work / "file-store")],
        "--request-timeout inf": [*BUILDER, *make, "--request-timeout", "inf"],
        "--request-timeout nan": [*BUILDER, *make, "--request-timeout", "nan"],
        "--temperature nan": [*BUILDER, *make, "--temperature", "nan"],
        "--temperature inf": [*BUILDER, *make, "--temperature", "inf"],
        "--judge-temperature nan": [*BUILDER, *make, "--judge-temperature", "nan"],
        "--top-p nan": [*BUILDER, *make, "--top-p", "nan"],
        "make-eft --held-out nan": [*BUILDER, "make-eft", "--held-out", "nan"],
        "make-prompts --similarity inf": [*BUILDER, "make-prompts", "--similarity", "inf"],
        "train sft --lr nan": [*BUILDER, "train", "sft", "--base", "x", "--data", "x", "--name", "x", "--lr", "nan"],
        "eval head-to-head --a-temperature nan": [*BUILDER, "eval", "head-to-head", "--a", "x", "--b", "y", "--a-temperature", "nan"],
        "manifest not JSON (show)": [*BUILDER, "show", bad_id, "--store", str(broken)],
        "manifest not JSON (verify)": [*BUILDER, "verify", bad_id, "--store", str(broken)],
        "edited manifest (verify)": [*BUILDER, "verify", edited_id, "--store", str(edited)],
        "full disk at a cache shard (injected)": [sys.executable, "-c", FULL_DISK, "generations", *make, "--store", str(work / "s1")],
        "full disk at the version write (injected)": [sys.executable, "-c", FULL_DISK, ".partial-pairs-", *make, "--store", str(work / "s2")],
    }
    for name, sql in {
        "query: COPY over pairs.parquet": f"COPY (SELECT 1) TO '{(store / vid).resolve()}/pairs.parquet'",
        "query: COPY anywhere": f"COPY (SELECT 1) TO '{work}/out.csv'",
        "query: ATTACH a new file": f"ATTACH '{work}/new.duckdb'",
        "query: read_text('/etc/passwd')": "SELECT * FROM read_text('/etc/passwd')",
        "query: read_csv('/etc/passwd')": "SELECT * FROM read_csv('/etc/passwd')",
        "query: CREATE TABLE": "CREATE TABLE t AS SELECT 1",
        "query: SET enable_external_access": "SET enable_external_access = true",
        "query: INSTALL": "INSTALL httpfs",
    }.items():
        found[name] = [*BUILDER, "query", "--store", str(store), sql]
    namespaces = shutil.which("unshare") and subprocess.run(["unshare", "--user", "--map-user=1000", "true"], capture_output=True, check=False).returncode == 0
    unprivileged = ["unshare", "--user", "--map-user=1000"] if os.geteuid() == 0 and namespaces else []
    if os.geteuid() != 0 or unprivileged:
        found["read-only store"] = [*unprivileged, *BUILDER, *make, "--store", str(read_only)]
        found["unreadable weights file"] = [*unprivileged, *BUILDER, "make-pairs", "--model", str(unreadable), "--store", str(work / "s3")]
    if namespaces and subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True, check=False).returncode == 0:
        tmpfs = work / "tmpfs"
        tmpfs.mkdir()
        command = " ".join(f"'{a}'" for a in [*BUILDER, *make, "--store", str(tmpfs)])
        found["full disk (a real 64k tmpfs)"] = [
            "unshare", "-r", "-m", "sh", "-c",
            f"mount -t tmpfs -o size=64k tmpfs {tmpfs} && head -c 57344 /dev/zero > {tmpfs}/ballast && {command}",
        ]
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, type=Path)
    model = parser.parse_args().model.resolve()
    work = Path(tempfile.mkdtemp(prefix="bad-inputs-"))
    os.environ.setdefault("BUILDER_CACHE", str(work / "cache"))
    try:
        found = cases(model, work)
        good = 0
        for name, command in found.items():
            result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
            lines = result.stderr.strip().splitlines()
            # one line of error, last; progress bars of the work saved before a mid-run fault may precede it
            ok = (result.returncode == 2 and [x for x in lines if x.startswith("Error: ")] == lines[-1:]
                  and all(" eta " in x for x in lines[:-1]) and "Traceback" not in result.stderr)
            good += ok
            print(f"{'ok  ' if ok else 'FAIL'} {name}: exit {result.returncode}: {lines[-1] if lines else ''}"[:220], flush=True)
        print(f"{good} of {len(found)} end with one line and exit status 2")
    finally:
        (work / "read-only-store").chmod(0o755)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
