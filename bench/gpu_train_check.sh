#!/usr/bin/env bash
# By hand, on a CUDA machine: the trainers' GPU path (bf16, activation checkpointing) through `accelerate launch`,
# with generation on the GPU in between. Tiny test model, so it needs no download:
#   bash bench/gpu_train_check.sh [workdir]
set -euo pipefail
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 PYTHONPATH="$PWD:$PWD/tests:${PYTHONPATH:-}"
work=${1:-$(mktemp -d)}
store="$work/store"
builder() { python3 -m builder "$@" --store "$store"; }
python3 -c "import torch; assert torch.cuda.is_available(), 'no GPU'; print('gpu:', torch.cuda.get_device_name(), 'torch', torch.__version__)"
python3 -c "
from pathlib import Path; from tiny_model import build_tiny_model; from builder.judging.judge import load_template
build_tiny_model(Path('$work/tiny'), load_template().text)"
sft=$(builder mix-sft | tail -1)
time accelerate launch --num_processes 1 --mixed_precision bf16 -m builder train sft --base "$work/tiny" --data "$sft" \
  --name M1 --max-steps 8 --micro-batch-size 8 --max-length 1024 --store "$store"
time pairs=$(builder make-pairs --model M1 --limit 16 --max-new-tokens 24 --judge-max-new-tokens 32 | tail -1)
time accelerate launch --num_processes 1 --mixed_precision bf16 -m builder train dpo --base M1 --data "$pairs" \
  --name M2 --max-steps 4 --batch-size 8 --micro-batch-size 8 --store "$store"
builder models
python3 - "$store" <<'PY'
import json, sys
for name in ("M1", "M2"):
    lineage = json.load(open(f"{sys.argv[1]}/models/{name}/lineage.json"))
    args = lineage["trainer"]["trl_args"]
    print(name, "use_cpu", lineage["trainer"]["use_cpu"], "bf16", args["bf16"], "activation_checkpointing",
          args.get("activation_checkpointing", args.get("gradient_checkpointing")), "steps", lineage["steps"], "seconds", lineage["train_seconds"],
          {k: round(v, 4) for k, v in lineage["metrics"].items() if k in ("train_loss", "rewards/accuracies", "rewards/margins")})
PY
