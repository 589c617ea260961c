"""float32 vs bfloat16 generation on this machine's CPU: the reason `--dtype auto` picks float32 on a CPU.

    python bench/cpu_dtype.py [--batch 8] [--new-tokens 24] [--threads 2]

Greedy generation of a fixed number of new tokens from the embedded SmolLM2-135M-Instruct on a batch of
judge-sized prompts (about 300 tokens each), once per dtype, after one warm-up call each.
"""

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=None, help="torch threads [default: torch's]")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from builder.engines.models import resolve_model

    if args.threads:
        torch.set_num_threads(args.threads)
    path = resolve_model(None).path
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    question = "Review the user's question and the response below, then score the response. " * 20
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": f"{question}{i}"}], tokenize=False, add_generation_prompt=True)
             for i in range(args.batch)]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {tuple(batch['input_ids'].shape)}, {args.new_tokens} new tokens")
    for dtype in (torch.float32, torch.bfloat16):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        knobs = {"do_sample": False, "pad_token_id": tokenizer.pad_token_id}
        with torch.inference_mode():
            model.generate(**batch, max_new_tokens=2, **knobs)  # warm-up
            started = time.perf_counter()
            model.generate(**batch, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, **knobs)
        seconds = time.perf_counter() - started
        print(f"{dtype!s:15} {seconds:6.1f} s  {args.batch * args.new_tokens / seconds:6.1f} new tokens/s")


if __name__ == "__main__":
    main()
