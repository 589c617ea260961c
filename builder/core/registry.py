"""Named models in the store: `<store>/models/<name>/` holds the weights, the tokenizer, `lineage.json`
(base, training data version and its manifest hash, trainer config, final metrics, code version) and a model
card rendered from cards/model_card.md. `builder make-pairs --model M2` finds them by name."""

import json
from pathlib import Path

from builder.core.store import Store


def model_folder(store: Store, name: str) -> Path:
    return store.root / "models" / name


def registered_models(store: Store) -> list[dict]:
    """Every model's lineage, oldest first."""
    found = [json.loads(p.read_text()) for p in (store.root / "models").glob("*/lineage.json")]
    return sorted(found, key=lambda lineage: lineage["created_at"])


SHOWN_METRICS = {"train_loss": "loss", "rewards/accuracies": "acc", "rewards/margins": "margin"}  # short: tables are 80 wide


def final_metrics(metrics: dict) -> str:
    """The figures a listing shows of a model: mean training loss and, for DPO, the last step's reward accuracy and margin."""
    return " ".join(f"{short} {metrics[k]:.3g}" for k, short in SHOWN_METRICS.items() if k in metrics)


def ancestry(lineage: dict, by_name: dict[str, dict]) -> list[str]:
    """M0 → M1 → M2: the chain of bases, following registered names back to the first outside model."""
    chain = [lineage["name"]]
    base = lineage["base"]["spec"]
    while base in by_name and base not in chain:
        chain.append(base)
        base = by_name[base]["base"]["spec"]
    chain.append(base.rstrip("/").rsplit("/", 1)[-1] if base.startswith(("/", ".", "~")) else base)  # a folder by its name
    return chain[::-1]


def checkpoint_summary(lineage: dict) -> str:
    """'; step 4 of 2, 4, 6 (best eval_rewards/accuracies 0.5, 0.75, 0.75)' for a model picked on a held-out split."""
    picked = lineage.get("checkpoints")
    if not picked:
        return ""
    steps = ", ".join(str(e["step"]) for e in picked["evaluated"])
    figures = ", ".join(f"{e[picked['metric']]:.3g}" for e in picked["evaluated"])
    return f"; step {picked['chosen_step']} of {steps} ({picked['rule']} {picked['metric']} {figures})"
