"""LoRA and QLoRA through peft, handed to TRL's trainers as their `peft_config`.

A LoRA model is registered like any other: the adapter is kept under `adapter/` and the base with the adapter
merged into it is written beside it as full weights, so every backend (transformers, vLLM, a server) loads a
LoRA model as it loads any model, and the folder's fingerprint covers the merged weights and the adapter.
The merge reloads the base in the training dtype, never in 4 bits: a QLoRA adapter is merged into the
unquantized base it was trained on top of.
"""

import importlib.util
from pathlib import Path

from builder.core.errors import BuilderError

ADAPTER_FOLDER = "adapter"


def lora_config(r: int, alpha: int, dropout: float, target_modules: str):
    """peft's LoraConfig for a causal LM; target_modules is "all-linear" or comma-separated module names."""
    from peft import LoraConfig

    modules = target_modules if target_modules == "all-linear" else [m.strip() for m in target_modules.split(",") if m.strip()]
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=modules, task_type="CAUSAL_LM")


def four_bit_config(use_cpu: bool):
    """bitsandbytes NF4 with double quantization and bfloat16 compute, the QLoRA paper's setting; CUDA only."""
    if use_cpu:
        raise BuilderError("--load-in-4bit needs a CUDA GPU (bitsandbytes 4-bit); this machine has none")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise BuilderError("--load-in-4bit needs bitsandbytes: pip install -e '.[qlora]'")
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def trainable_parameters(model) -> dict:
    trainable, total = model.get_nb_trainable_parameters()
    return {"trainable": trainable, "total": total}


def merge_adapter(base: Path, adapter: Path, out: Path, dtype) -> None:
    """Base weights plus the adapter, merged and saved as a plain transformers model in `out`."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    PeftModel.from_pretrained(model, adapter).merge_and_unload().save_pretrained(out)
