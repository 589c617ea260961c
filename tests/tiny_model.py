"""A tiny but real chat model for tests: Llama architecture, a BPE tokenizer trained here, ChatML template.

It is trained for a few seconds with TRL's SFTTrainer on two kinds of examples, so that it behaves like a
(very small) self-rewarding model: short answers to short questions, and judgments that end in a
`Score: N` line with N spread over 1..5. Built once per test session, in seconds, on a CPU.
"""

import random
from pathlib import Path

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINGS = ["apple", "river", "stone", "cloud", "lamp", "violin", "garden", "bridge", "pepper", "comet"]
VERDICTS = ["It is short.", "It answers the question.", "It is relevant but thin.", "It is clear.", "It misses the point."]


def _examples(judge_template: str, rng: random.Random) -> list[dict]:
    questions = [f"Name thing number {i}." for i in range(12)] + ["Say hello.", "Name a fruit.", "Name a colour."]
    examples = []
    for _ in range(160):
        question = rng.choice(questions)
        answer = f"It is a {rng.choice(THINGS)}." if rng.random() < 0.7 else f"A {rng.choice(THINGS)} and a {rng.choice(THINGS)}."
        examples.append({"prompt": [{"role": "user", "content": question}], "completion": [{"role": "assistant", "content": answer}]})
        judge_prompt = judge_template.replace("{prompt}", question).replace("{response}", answer)
        judgment = f"{rng.choice(VERDICTS)}\nScore: {rng.randint(1, 5)}"
        examples.append({"prompt": [{"role": "user", "content": judge_prompt}], "completion": [{"role": "assistant", "content": judgment}]})
    rng.shuffle(examples)
    return examples


def _train_tokenizer(corpus: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=768, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHATML
    )


def build_tiny_model(out_dir: Path, judge_template: str, steps: int = 120, attention_heads: int = 2) -> Path:
    """2 attention heads of hidden size 64 give head_dim 32, the smallest vLLM's CPU attention supports, so the
    one model serves every test, the vLLM ones included."""
    import torch
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    from trainers.train import checkpointing_argument

    torch.manual_seed(0)
    examples = _examples(judge_template, random.Random(0))
    corpus = [m["content"] for e in examples for m in e["prompt"] + e["completion"]]
    tokenizer = _train_tokenizer(corpus)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=attention_heads,
        num_key_value_heads=attention_heads, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    args = SFTConfig(
        output_dir=str(out_dir / "trainer"), max_steps=steps, per_device_train_batch_size=8, learning_rate=3e-3,
        lr_scheduler_type="constant", warmup_steps=0, bf16=False, use_cpu=True, **{checkpointing_argument(): False},
        report_to="none", save_strategy="no", logging_strategy="no", max_length=1024, disable_tqdm=True,
    )
    SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(examples), processing_class=tokenizer).train()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
