"""Checkpoint selection (early stopping, as the paper does): a held-out split of the training data, every
saved checkpoint evaluated on it, and the best (or the last) one registered.

- The split: a row is held out when a hash of its prompt falls below `--eval-share`, so a prompt's side never
  depends on the rest of the data (and both answers of a pair stay on one side).
- Each checkpoint is evaluated by TRL's own `evaluate` when it is saved (every `--save-steps` and at the last
  step), on the held-out rows: DPO by the reward accuracy of the held-out pairs (the share whose chosen answer
  gets the higher implicit reward), SFT by the held-out loss. Every checkpoint is kept until training ends.
- "best" is transformers' own rule (`load_best_model_at_end`): a later checkpoint replaces the best only when
  it is strictly better, so on a tie the earlier, less trained one is kept. "last" keeps today's behaviour.
  Without a held-out split there is nothing to compare and the last checkpoint is the model.
"""

from builder.core.errors import BuilderError
from builder.core.records import stable_hash
from trainers.configs import CHECKPOINT_RULES

SELECTION_METRIC = {"dpo": ("rewards/accuracies", True), "sft": ("loss", False)}  # (metric, greater is better)
RULES = CHECKPOINT_RULES


def held_out(prompt, share: float) -> bool:
    return int(stable_hash(prompt)[:12], 16) / 16**12 < share


def split(dataset, share: float):
    """(train rows, held-out rows) of a `datasets.Dataset` with a `prompt` column; (dataset, None) for share 0."""
    if share == 0:
        return dataset, None
    sides = [held_out(prompt, share) for prompt in dataset["prompt"]]
    train = dataset.select([i for i, out in enumerate(sides) if not out])
    evaluation = dataset.select([i for i, out in enumerate(sides) if out])
    if len(evaluation) == 0 or len(train) == 0:
        raise BuilderError(f"--eval-share {share} leaves {len(train)} rows to train on and {len(evaluation)} to evaluate "
                           f"of {len(dataset)}; change it (or 0 for no checkpoint selection)")
    return train, evaluation


def selection_arguments(method: str, rule: str, save_steps: int, micro_batch_size: int) -> dict:
    """TrainingArguments that evaluate every saved checkpoint, keep them all, and load the best at the end."""
    metric, greater = SELECTION_METRIC[method]
    return {
        "eval_strategy": "steps", "eval_steps": save_steps, "per_device_eval_batch_size": micro_batch_size,
        "save_total_limit": None, "load_best_model_at_end": rule == "best",
        "metric_for_best_model": metric, "greater_is_better": greater,
    }


def selection_record(method: str, rule: str, share: float, rows: tuple[int, int], history: list[dict], state) -> dict:
    """Every checkpoint's held-out figures and which one became the model, for lineage.json."""
    metric = f"eval_{SELECTION_METRIC[method][0]}"
    evaluated = [{k: v for k, v in entry.items() if k == "step" or (k.startswith("eval_") and isinstance(v, (int, float))
                  and not k.endswith(("_runtime", "_per_second")))}
                 for entry in history if metric in entry]
    best = state.best_model_checkpoint
    chosen = int(best.rsplit("-", 1)[-1]) if rule == "best" and best else state.global_step
    return {"rule": rule, "metric": metric, "greater_is_better": SELECTION_METRIC[method][1], "eval_share": share,
            "train_rows": rows[0], "eval_rows": rows[1], "evaluated": evaluated, "chosen_step": chosen}
