import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("BUILDER_CACHE", str(tmp_path_factory.getbasetemp() / "builder-cache"))
    monkeypatch.delenv("BUILDER_STORE", raising=False)


def run_builder(*args, cwd=None, check=False, timeout=600, process=False) -> subprocess.CompletedProcess:
    """The CLI as a user runs it. In-process by default (the fast tier: no interpreter and torch import per
    call), with the real argument parsing, exit status and stdout/stderr; `process=True` runs a real process,
    for tests of what only a process shows (kills, races, the installed entry point)."""
    if process:
        result = subprocess.run(
            [sys.executable, "-c", "from builder.app.cli import main; main()", *map(str, args)],
            capture_output=True, text=True, cwd=cwd, timeout=timeout, env=os.environ.copy(),
        )
    else:
        result = _run_in_process([str(a) for a in args], cwd)
    if check and result.returncode != 0:
        raise AssertionError(f"builder {' '.join(map(str, args))} failed ({result.returncode}):\n{result.stderr}")
    return result


def _run_in_process(args: list[str], cwd) -> subprocess.CompletedProcess:
    from click.testing import CliRunner

    from builder.app.cli import run

    here = os.getcwd()
    with CliRunner().isolation() as (out, err, _):
        try:
            if cwd is not None:
                os.chdir(cwd)
            code = run(args)
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        except Exception:  # what a process would print before exiting 1: a traceback
            traceback.print_exc()
            code = 1
        finally:
            os.chdir(here)
            sys.stdout.flush()
            sys.stderr.flush()
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    return subprocess.CompletedProcess(["builder", *args], code, stdout, stderr)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A real Llama-architecture model with a locally trained tokenizer, trained for seconds to answer
    short questions and to end judgments with 'Score: N'."""
    from tiny_model import build_tiny_model

    from builder.judging.judge import load_template

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), load_template().text)


@pytest.fixture(scope="session")
def two_versions(tiny_model, tmp_path_factory) -> tuple[Path, str, str]:
    """Two real pairs versions in one store: the second answers the first's prompts with another seed, so it
    names the first as its parent (an iteration's next version)."""
    store = tmp_path_factory.mktemp("two-versions")
    prompts = tmp_path_factory.mktemp("two-versions-prompts") / "prompts.jsonl"
    prompts.write_text("".join(f'{{"prompt": "Name thing number {i}."}}\n' for i in range(6)))
    fast = ["--n-samples", "4", "--n-judgments", "3", "--max-new-tokens", "16", "--judge-max-new-tokens", "32", "--batch-size", "8"]
    first = run_builder("make-pairs", "--model", tiny_model, "--prompts", prompts, "--store", store, *fast, "--seed", "1", check=True)
    v1 = first.stdout.strip().splitlines()[-1]
    second = run_builder("make-pairs", "--model", tiny_model, "--prompts", v1, "--store", store, *fast, "--seed", "2", check=True)
    return store, v1, second.stdout.strip().splitlines()[-1]


def write_repo_folder(operations, folder: Path) -> Path:
    """What an empty repo holds after a commit of these operations."""
    from huggingface_hub import CommitOperationAdd

    folder.mkdir(parents=True, exist_ok=True)
    for operation in operations:
        if isinstance(operation, CommitOperationAdd):
            shutil.copyfile(operation.path_or_fileobj, folder / operation.path_in_repo)
    return folder
