import os
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
        [sys.executable, "-c", "from builder.cli import main; main()", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=timeout, env=os.environ.copy(),
    )
    if check and result.returncode != 0:
        raise AssertionError(f"builder {' '.join(map(str, args))} failed ({result.returncode}):\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A real Llama-architecture model with a locally trained tokenizer, trained for seconds to answer
    short questions and to end judgments with 'Score: N'."""
    from builder.judge import load_template
    from tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), load_template().text)
