"""Thin adapters over TRL: `builder train sft` and `builder train dpo`.

They turn a dataset version into TRL's trainer arguments, run TRL's own trainer (never subclassed), and
register the result as a named model in the store (`<store>/models/<name>`) with its lineage. Defaults are
the paper's: SFT lr 5.5e-6 → 1.1e-6 and DPO lr 1e-6 → 1e-7, both decaying linearly (TRL's "polynomial"
schedule with power 1 and an end value), batch 16 by gradient accumulation, dropout 0.1, DPO beta 0.1 and
a checkpoint every 200 steps. On a CPU, bf16 and activation checkpointing are turned off (TRL's defaults
would refuse to start there).
"""

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from builder.core.errors import BuilderError
from builder.core.progress import console, quiet_transformers
from builder.core.records import file_sha256, stable_hash
from builder.core.registry import model_folder
from builder.core.store import Store, code_version, now
from builder.engines.chat_template import ensure_chat_template
from builder.engines.models import resolve_model
from trainers.checkpoints import selection_arguments, selection_record, split
from trainers.configs import LORA_FIELDS, TrainConfig
from trainers.lora import (
    ADAPTER_FOLDER,
    four_bit_config,
    lora_config,
    merge_adapter,
    trainable_parameters,
)
from trainers.model_card import write_model_card
from trainers.progress import RichProgress

DROPOUT_FIELDS = ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop")


def identity_settings(config: TrainConfig) -> dict:
    """The settings that decide a model, for its identity. Options added later are left out while they are
    off, so a model trained before they existed keeps its identity (and is still found as `already trained`)."""
    settings = asdict(config)
    if config.loss == "dpo":
        del settings["loss"], settings["nll_weight"]
    if not config.lora:
        for name in LORA_FIELDS:
            del settings[name]
    del settings["select_checkpoint"]
    if config.eval_share:
        settings["select_checkpoint"] = config.checkpoint_rule()
    else:
        del settings["eval_share"]
    return settings


def dpo_loss_arguments(config: TrainConfig) -> dict:
    """TRL's own losses: "dpo" is its sigmoid loss; "dpo+nll" adds its "sft" loss (the mean NLL of the chosen
    answers' tokens) with weight --nll-weight, as iterative RPO (Pang et al., 2024) does."""
    if config.loss == "dpo+nll":
        return {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, config.nll_weight or 1.0]}
    return {"loss_type": ["sigmoid"]}


def data_table(store: Store, spec: str, method: str):
    """The training table of a version (sft.parquet or pairs.parquet) with that version's manifest."""
    from datasets import load_dataset

    table = {"sft": "sft", "dpo": "pairs"}[method]
    version = store.load(spec)
    files = version.files_of(table)
    if not files:
        raise BuilderError(f"version {version.id} has no {table} table; train {method} needs a {'mix-sft' if method == 'sft' else 'make-pairs'} version")
    rows = version.manifest.counts.get(table, 0)
    if rows == 0:
        raise BuilderError(f"version {version.id} has no {table} rows to train on")
    dataset = load_dataset("parquet", data_files=[str(path) for path in files], split="train")
    keep = ["prompt", "completion"] if method == "sft" else ["prompt", "chosen", "rejected"]
    return dataset.select_columns(keep), version


def trainer_arguments(config: TrainConfig, output_dir: Path, use_cpu: bool) -> dict:
    return {
        "output_dir": str(output_dir),
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": "polynomial",
        "lr_scheduler_kwargs": {"lr_end": config.lr_end, "power": 1.0},
        "per_device_train_batch_size": config.micro_batch_size,
        "gradient_accumulation_steps": config.batch_size // config.micro_batch_size,
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps,
        "save_steps": config.save_steps,
        "save_total_limit": 2,
        "logging_steps": 1,
        "seed": config.seed,
        "report_to": "none",
        "bf16": not use_cpu,
        checkpointing_argument(): not use_cpu,
        "use_cpu": use_cpu,
        "disable_tqdm": True,  # the rich bar of trainers/progress.py stands in for tqdm
        "max_length": config.max_length,
    }


def checkpointing_argument() -> str:
    """transformers after 5.19 renamed `gradient_checkpointing` to `activation_checkpointing`; vLLM's CPU build pins an
    older transformers, and the old name is only a deprecated alias in the newer ones."""
    from transformers import TrainingArguments

    fields = TrainingArguments.__dataclass_fields__
    return "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"


def train(config: TrainConfig, store: Store) -> tuple[Path, bool]:
    """Train and register `config.name`. Returns (model folder, trained_now)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    config.validate()
    final = model_folder(store, config.name)
    base = resolve_model(config.base, store.root)
    dataset, version = data_table(store, config.data, config.method)
    dataset, evaluation = split(dataset, config.eval_share)
    identity = {**identity_settings(config), "base": base.fingerprint, "data": version.manifest.files}
    if (final / "lineage.json").exists():
        lineage = json.loads((final / "lineage.json").read_text())
        if lineage["identity_sha256"] != stable_hash(identity):
            raise BuilderError(f"model {config.name} already exists with another configuration; choose another --name")
        return final, False

    quiet_transformers()
    use_cpu = not torch.cuda.is_available()
    # Kept across a kill, so TRL resumes from its checkpoints; named by the identity so another configuration never does.
    work = final.with_name(f".partial-{config.name}-{stable_hash(identity)[:12]}")
    args = trainer_arguments(config, work / "trainer", use_cpu)
    if evaluation is not None:
        args |= selection_arguments(config.method, config.checkpoint_rule(), config.save_steps, config.micro_batch_size)
    dropout = {f: config.dropout for f in DROPOUT_FIELDS if hasattr(_config(base.path), f)}
    dtype = torch.float32 if use_cpu else torch.bfloat16
    quantized = {}
    if config.load_in_4bit:  # each process quantizes its own copy onto its own GPU
        quantized = {"quantization_config": four_bit_config(use_cpu), "device_map": {"": int(os.environ.get("LOCAL_RANK", "0"))}}
    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=dtype, **quantized, **dropout)
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    default_template = ensure_chat_template(tokenizer)  # saved with the model, so the models after it carry it
    adapter = lora_config(config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_target_modules) if config.lora else None
    if config.method == "sft":
        trainer = SFTTrainer(model=model, args=SFTConfig(**args), train_dataset=dataset, eval_dataset=evaluation,
                             processing_class=tokenizer, peft_config=adapter)
    else:
        args |= dpo_loss_arguments(config)
        dpo_args = DPOConfig(**args, beta=config.beta, disable_dropout=config.dropout == 0,
                             precompute_ref_log_probs=config.precompute_ref_log_probs)
        trainer = DPOTrainer(model=model, args=dpo_args, train_dataset=dataset, eval_dataset=evaluation,
                             processing_class=tokenizer, peft_config=adapter)
    trainer.remove_callback(PrinterCallback)  # with tqdm off it would print every log line; the full history is kept below
    trainer.add_callback(RichProgress(f"{config.method} {config.name}"))
    checkpoints = sorted((work / "trainer").glob("checkpoint-*"))
    console.print(f"training {config.name} ({config.method}) from {config.base} on {version.id}: {len(dataset)} rows"
                  + (f", {len(evaluation)} held out to pick the {config.checkpoint_rule()} checkpoint" if evaluation else "")
                  + (f", resuming from {checkpoints[-1].name}" if checkpoints else ""))
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=bool(checkpoints) or None)
    trainer.save_model(str(work / ADAPTER_FOLDER if config.lora else work))  # every process takes part (sharded weights are gathered)
    if not trainer.is_world_process_zero():  # under `accelerate launch`, rank 0 alone registers the model
        return final, True
    if config.lora:
        merge_adapter(base.path, work / ADAPTER_FOLDER, work, dtype)
    tokenizer.save_pretrained(work)
    history = trainer.state.log_history
    (work / "trainer" / "log_history.json").write_text(json.dumps(history, indent=1))
    for checkpoint in (work / "trainer").glob("checkpoint-*"):
        shutil.rmtree(checkpoint)
    lineage = {
        "name": config.name,
        "method": config.method,
        "base": base.to_json(),
        "data": {"version": version.id, "kind": version.manifest.kind,
                 "manifest_sha256": file_sha256(version.folder / "manifest.json")},
        "config": asdict(config),
        "trainer": {"trl_args": {k: v for k, v in args.items() if k != "output_dir"}, "use_cpu": use_cpu},
        "metrics": {**result.metrics, **_last_training_metrics(history)},
        "steps": result.global_step,
        **default_template,
        **({"adapter": adapter_lineage(config, trainer.model)} if config.lora else {}),
        **({"checkpoints": selection_record(config.method, config.checkpoint_rule(), config.eval_share,
                                            (len(dataset), len(evaluation)), history, trainer.state)} if evaluation is not None else {}),
        "train_seconds": round(time.perf_counter() - started, 1),
        "identity_sha256": stable_hash(identity),
        "code_version": code_version(),
        "created_at": now(),
    }
    if store.recipe:
        lineage["recipe"] = store.recipe
    (work / "lineage.json").write_text(json.dumps(lineage, indent=2))
    write_model_card(work, lineage)
    os.replace(work, final)
    return final, True


def adapter_lineage(config: TrainConfig, model) -> dict:
    return {
        "kind": "qlora" if config.load_in_4bit else "lora", "folder": ADAPTER_FOLDER, "merged": True,
        "r": config.lora_r, "alpha": config.lora_alpha, "dropout": config.lora_dropout,
        "target_modules": config.lora_target_modules, "load_in_4bit": config.load_in_4bit,
        "parameters": trainable_parameters(model),
    }


def _config(path: Path):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path)


def _last_training_metrics(history: list[dict]) -> dict:
    """The last logged value of each training metric (loss, rewards/accuracies, rewards/margins…)."""
    last: dict = {}
    for entry in history:
        last.update({k: v for k, v in entry.items() if isinstance(v, (int, float)) and k not in ("epoch", "step")})
    return last
