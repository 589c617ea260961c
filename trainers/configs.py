"""`builder train sft|dpo`'s config: knobs (builder/core/knobs.py), also the command line and a recipe's
`sft:`/`dpo:` settings. Imports nothing heavy, so `builder --help` stays fast."""

from dataclasses import MISSING, dataclass

from builder.core.errors import BuilderError
from builder.core.knobs import check_knobs, knob

CHECKPOINT_RULES = ("best", "last")
# The paper's learning rates per method; micro-batches sized for a 135M model on a CPU.
METHOD_DEFAULTS = {
    "sft": {"learning_rate": 5.5e-6, "lr_end": 1.1e-6, "micro_batch_size": 4},
    "dpo": {"learning_rate": 1e-6, "lr_end": 1e-7, "micro_batch_size": 2},
}
DPO_ONLY = ("beta", "precompute_ref_log_probs", "loss", "nll_weight")
LOSSES = ("dpo", "dpo+nll")
LORA_FIELDS = ("lora", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "load_in_4bit")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    method: str  # "sft" | "dpo": the command, not an option
    base: str = knob(MISSING, "Model to start from: a folder, a registered name, a Hub id, or the default")
    data: tuple[str, ...] = knob(MISSING, "The dataset version to train on (mix-sft for sft; make-pairs or make-judge-pairs for dpo); "
                                          "repeat to train on several at once, their rows concatenated (Meta-Rewarding: actor and "
                                          "judge pairs)")
    name: str = knob(MISSING, "Name to register the result under (M1, M2…)")
    learning_rate: float = knob(MISSING, "Peak learning rate", rule="positive", flag="--lr")
    lr_end: float = knob(MISSING, "Learning rate at the last step (linear decay)", rule="non_negative")
    batch_size: int = knob(16, "Examples per optimizer step", rule="positive")
    micro_batch_size: int = knob(4, "Examples per forward pass (the rest by gradient accumulation)", rule="positive")
    epochs: float = knob(1.0, "Passes over the data", rule="positive")
    max_steps: int = knob(-1, "Stop after this many optimizer steps (-1: the epochs decide)")
    dropout: float = knob(0.1, "Dropout in every layer that has it", rule="share")
    max_length: int = knob(1024, "Longest example, in tokens (longer ones are truncated)", rule="positive")
    beta: float = knob(0.1, "DPO's beta: how far the policy may move from the reference", rule="positive")
    # The reference model is frozen, so one pass over the data before training serves every epoch (DPO only).
    precompute_ref_log_probs: bool = knob(True, "Score the data with the frozen reference once before training instead of at every step")
    save_steps: int = knob(200, "Checkpoint every N steps (a killed run resumes from the last)", rule="positive")
    seed: int = knob(0, "Seed of shuffling, dropout and initialisation")
    loss: str = knob("dpo", "dpo, or dpo+nll: plus the chosen answers' NLL (iterative RPO)", choices=LOSSES)
    nll_weight: float | None = knob(None, "Weight of the NLL term with --loss dpo+nll [default: 1.0]", rule="positive")
    lora: bool = knob(False, "Train a LoRA adapter (peft) and register the base with it merged in")
    lora_r: int = knob(16, "LoRA rank", rule="positive")
    lora_alpha: int = knob(32, "LoRA alpha", rule="positive")
    lora_dropout: float = knob(0.05, "Dropout on the LoRA layers", rule="share")
    lora_target_modules: str = knob("all-linear", "all-linear, or comma-separated module names (q_proj,v_proj)")
    load_in_4bit: bool = knob(False, "QLoRA: the frozen base in 4-bit NF4 (bitsandbytes, CUDA only)")
    eval_share: float = knob(0.0, "Hold out this share of the data (by prompt hash) and evaluate every checkpoint on it", rule="share")
    select_checkpoint: str | None = knob(None, "Which checkpoint becomes the model [default: best with --eval-share, else last]",
                                         choices=CHECKPOINT_RULES)

    def __post_init__(self):
        if isinstance(self.data, str):  # one version, as a recipe or a caller may give it
            object.__setattr__(self, "data", (self.data,))

    def checkpoint_rule(self) -> str:
        return self.select_checkpoint or ("best" if self.eval_share > 0 else "last")

    def validate(self) -> None:
        check_knobs(self)
        if self.batch_size % self.micro_batch_size:
            raise BuilderError("--batch-size must be a positive multiple of --micro-batch-size")
        if self.lr_end > self.learning_rate:
            raise BuilderError("--lr-end must be between 0 and --lr")
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise BuilderError(f"model name {self.name!r} must be a plain name such as M1")
        if not self.data:
            raise BuilderError("--data names no version")
        if len(set(self.data)) < len(self.data):
            raise BuilderError("--data names the same version twice")
        if self.loss != "dpo" and self.method != "dpo":
            raise BuilderError("--loss is an option of train dpo")
        if self.nll_weight is not None and self.loss != "dpo+nll":
            raise BuilderError("--nll-weight goes with --loss dpo+nll")
        if self.select_checkpoint == "best" and self.eval_share == 0:
            raise BuilderError("--select-checkpoint best needs a held-out split: --eval-share (e.g. 0.1)")
        if self.load_in_4bit and not self.lora:
            raise BuilderError("--load-in-4bit goes with --lora (a 4-bit base can only be trained through an adapter)")
        if self.lora and not self.lora_target_modules.replace(",", "").strip():
            raise BuilderError("--lora-target-modules must not be empty")
