"""Did DPO move the policy? DPO's implicit reward of every pair of a pairs version, policy against reference.

    python bench/dpo_shift.py --store STORE --pairs pairs-… --policy M2 --reference M1 [--beta 0.1]

TRL logs rewards/accuracies and margins per training batch, before that batch's update and with dropout on,
which on a few dozen pairs is mostly noise. This scores every pair once with both models in eval mode
(dropout off): reward(y) = beta * (log p_policy(y|x) - log p_reference(y|x)). Give it the pairs the policy was
trained on (in-sample) and the next iteration's pairs (made after training, so out-of-sample).
"""

import argparse


def completion_log_prob(model, tokenizer, prompt: list[dict], answer: list[dict]) -> float:
    import torch

    prefix = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    whole = tokenizer.apply_chat_template(prompt + answer, tokenize=False)
    if not whole.startswith(prefix):
        raise ValueError("the chat template does not extend the prompt with the answer")
    prefix_ids = tokenizer(prefix, add_special_tokens=False, return_tensors="pt")["input_ids"]
    ids = tokenizer(whole, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        logits = model(ids).logits[0, :-1].float()
    log_probs = torch.log_softmax(logits, dim=-1).gather(1, ids[0, 1:, None])[:, 0]
    return log_probs[prefix_ids.shape[1] - 1 :].sum().item()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--pairs", required=True, help="a pairs version id")
    parser.add_argument("--policy", required=True)
    parser.add_argument("--reference", required=True)
    parser.add_argument("--beta", type=float, default=0.1)
    args = parser.parse_args()

    import polars as pl
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from builder.core.store import Store
    from builder.engines.models import resolve_model

    store = Store(args.store)
    pairs = pl.read_parquet(store.load(args.pairs).folder / "pairs.parquet").to_dicts()
    scores = {}
    for role in ("policy", "reference"):
        path = resolve_model(getattr(args, role), store.root).path
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        scores[role] = [(completion_log_prob(model, tokenizer, p["prompt"], p["chosen"]),
                         completion_log_prob(model, tokenizer, p["prompt"], p["rejected"])) for p in pairs]
    rewards = [(args.beta * (pc - rc), args.beta * (pr - rr)) for (pc, pr), (rc, rr) in zip(scores["policy"], scores["reference"])]
    margins = [c - r for c, r in rewards]
    n = len(margins)
    print(f"{args.policy} vs {args.reference} on {args.pairs} ({n} pairs, beta {args.beta}): "
          f"accuracy {sum(m > 0 for m in margins) / n:.3f}, mean margin {sum(margins) / n:+.4f}, "
          f"mean chosen reward {sum(c for c, _ in rewards) / n:+.4f}, mean rejected reward {sum(r for _, r in rewards) / n:+.4f}")


if __name__ == "__main__":
    main()
