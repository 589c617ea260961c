import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("BUILDER_CACHE", str(tmp_path_factory.getbasetemp() / "builder-cache"))
    monkeypatch.delenv("BUILDER_STORE", raising=False)


def run_builder(*args, cwd=None, check=False, timeout=600) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: a real process."""
    result = subprocess.run(
        [sys.executable, "-c", "from builder.app.cli import main; main()", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=timeout, env=os.environ.copy(),
    )
    if check and result.returncode != 0:
        raise AssertionError(f"builder {' '.join(map(str, args))} failed ({result.returncode}):\n{result.stderr}")
    return result


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
