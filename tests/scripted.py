"""An instant, deterministic generator plugged in at make-pairs' Generator seam, for shard tests that need many
prompts: its answers depend on the request key alone (so any batching gives the same version), and each process
appends the keys it answered to $SCRIPTED_LOG when set (so a test can count what was asked twice).

    python tests/scripted.py make-pairs --prompts … --store …   # the CLI in a real process, with this generator
"""

import os
import sys
import time

from builder.core.records import Completion, Request
from builder.engines.context import unknown_window
from builder.engines.models import ModelRef


class ScriptedGenerator:
    identity = {"backend": "scripted", "model": "scripted"}  # noqa: RUF012
    context = unknown_window("a scripted generator has no context window")

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.answered = 0

    def generate(self, requests: list[Request]) -> list[list[Completion]]:
        if self.delay:
            time.sleep(self.delay)
        self.answered += len(requests)
        if log := os.environ.get("SCRIPTED_LOG"):
            with open(log, "a") as handle:
                handle.write("".join(f"{r.key}\n" for r in requests))
        return [[answer(r.key, i) for i in range(r.sampling.n)] for r in requests]


def answer(key: str, sample: int) -> Completion:
    draw = int(key[sample * 4 : sample * 4 + 4], 16)
    if draw % 20 == 0:
        return Completion(f"Answer {sample} ({key[:8]}), no verdict.", "stop", 6)
    return Completion(f"Answer {sample} ({key[:8]}): it is fine.\nScore: {draw % 6}", "stop", 12 + draw % 7)


def plug_in(generator: ScriptedGenerator, patch=None) -> None:
    """Make make-pairs use `generator` for policy and judge (through `patch.setattr` in a test, else for good)."""
    import builder.stages.make_pairs as module

    targets = {"load_generator": lambda *args, **kwargs: generator,
               "resolve_model": lambda *args, **kwargs: ModelRef("scripted", None, "scripted:v1")}
    for name, value in targets.items():
        (patch.setattr(module, name, value) if patch else setattr(module, name, value))


if __name__ == "__main__":
    plug_in(ScriptedGenerator(float(os.environ.get("SCRIPTED_DELAY", "0"))))
    from builder.app.cli import main

    sys.argv = ["builder", *sys.argv[1:]]
    main()
