"""A default chat template for base models whose tokenizer has none (the paper's M0 is such a model).

The builder sends chat messages everywhere (make-pairs, make-eft, make-prompts, evaluation, and the SFT and
DPO data), so a tokenizer without a template would stop the loop at its first step. With the default, a base
model reads plain "User:"/"Assistant:" turns, and each assistant turn ends with the tokenizer's end-of-sequence
token, so SFT on it teaches the model to stop. It is used only where the tokenizer has no template of its own,
and wherever it is used it is recorded (`chat_template_record`): in a generator's identity (hence in every
version's manifest and in the generation cache key) and in a trained model's lineage. A model trained with
it saves it in its tokenizer, so the models after it carry it as their own.
"""

import hashlib

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if not loop.first %}{{ '\\n\\n' }}{% endif %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}"
    "{% elif message['role'] == 'user' %}User: {{ message['content'] }}"
    "{% else %}Assistant: {{ message['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\n\\nAssistant:' }}{% endif %}"
)


def chat_template_record() -> dict:
    return {"chat_template": "builder default", "chat_template_sha256": hashlib.sha256(DEFAULT_CHAT_TEMPLATE.encode()).hexdigest()}


def ensure_chat_template(tokenizer) -> dict:
    """Give a tokenizer without a chat template the default one. Returns what to record: {} when it has its own."""
    if getattr(tokenizer, "chat_template", None):
        return {}
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return chat_template_record()
