"""Named models in the store: `<store>/models/<name>/` holds the weights, the tokenizer, `lineage.json`
(base, training data version and its manifest hash, trainer config, final metrics, code version) and a model
card rendered from cards/model_card.md. `builder make-pairs --model M2` finds them by name."""

import json
import os
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
def judge_measurements(store: Store, fingerprint: str, template_sha256: str | None = None) -> list[dict]:
    """Every `eval judge` measurement in the store of the judge with these weights (and this template, when
    given), newest first: the registry of judge measurements that label quality and `builder models` read."""
    found = []
    for version in store.versions():
        m = version.manifest
        if m.kind != "judge" or (m.models.get("judge") or {}).get("model", {}).get("fingerprint") != fingerprint:
            continue
        if template_sha256 is not None and (m.judge or {}).get("sha256") != template_sha256:
            continue
        found.append({"version": version.id, "created_at": m.created_at, **m.stats.get("headline", {})})
    return found


def judge_label_quality(store: Store, fingerprint: str, template_sha256: str | None) -> dict:
    """What is known about labels from a judge without verifiers: its newest measurement, or that there is none."""
    measured = judge_measurements(store, fingerprint, template_sha256)
    return {"basis": "judge_measurement", **measured[0]} if measured else {"basis": "unmeasured"}


def record_judge_measurement(store: Store, name: str, measurement: dict) -> bool:
    """Add an `eval judge` measurement to a registered model's lineage (`judge_measurements`, one entry per judge
    version, oldest first). The lineage is descriptive: it is not part of the model's fingerprint. Returns
    False when `name` is no registered model (a base model from outside the store)."""
    path = model_folder(store, name) / "lineage.json"
    if not path.is_file():
        return False
    lineage = json.loads(path.read_text())
    kept = [m for m in lineage.get("judge_measurements", []) if m.get("version") != measurement.get("version")]
    lineage["judge_measurements"] = [*kept, measurement]
    partial = path.with_name(".lineage.json.partial")
    partial.write_text(json.dumps(lineage, indent=2))
    os.replace(partial, path)
    return True


def judge_accuracy_text(lineage: dict) -> str:
    """The newest judge measurement of a model in a few characters: "52% [45–59]", or "-"."""
    measured = lineage.get("judge_measurements") or []
    last = measured[-1] if measured else None
    if not last:
        return "-"
    if last.get("accuracy") is None:
        return "no pair judged"
    return f"{100 * last['accuracy']:.0f}% [{100 * last['low']:.0f}–{100 * last['high']:.0f}]"
