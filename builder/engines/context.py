"""Does a conversation fit the model's context window?

A conversation fits when its tokens as the model sees them (the chat template with the generation prompt)
plus the tokens it may generate are no more than the model's context length. Counting needs the model's own
tokenizer and context length, known for local weights (transformers, vLLM, and the openai backend serving
local weights) and unknown for a served model name, where nothing is checked and the manifest says so.

A prompt far too long is refused without tokenizing it: no token is longer than the vocabulary's longest
entry, so a text of more characters than `length × longest entry` cannot fit (a 1 MB prompt costs nothing).
"""

from collections.abc import Callable
from dataclasses import dataclass

from builder.core.records import Message


@dataclass(frozen=True)
class ContextWindow:
    length: int | None  # positions; None: unknown, nothing is checked
    count_tokens: Callable[[list[Message]], int] | None = None
    longest_token: int = 1  # characters of the vocabulary's longest entry
    unknown_because: str | None = None

    def overflow(self, messages: list[Message], max_new_tokens: int) -> str | None:
        """Why the conversation and `max_new_tokens` new tokens cannot fit, or None when they can (or when the
        length is unknown)."""
        if self.length is None or self.count_tokens is None:
            return None
        budget = self.length - max_new_tokens
        characters = sum(len(m["content"]) for m in messages)
        if characters > max(budget, 0) * self.longest_token:
            return f"{characters} characters cannot fit {budget} tokens ({self.length} positions - {max_new_tokens} new)"
        tokens = self.count_tokens(messages)
        if tokens > budget:
            return f"{tokens} prompt tokens + {max_new_tokens} new > {self.length} positions"
        return None

    def to_json(self) -> dict:
        return {"length": self.length} | ({"check": f"skipped: {self.unknown_because}"} if self.length is None else {})


def unknown_window(because: str) -> ContextWindow:
    return ContextWindow(None, unknown_because=because)


def local_window(tokenizer, config, length: int | None = None) -> ContextWindow:
    """The window of local weights: `length` if given (vLLM's max_model_len), else the model's positions."""
    length = length or max_positions(config, tokenizer)
    if length is None:
        return unknown_window("the model's config names no context length")
    if not getattr(tokenizer, "chat_template", None):
        return unknown_window("the tokenizer has no chat template to count a conversation with")

    def count(messages: list[Message]) -> int:
        text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    longest = max((len(entry) for entry in tokenizer.get_vocab()), default=1)
    return ContextWindow(length, count, max(longest, 1))


def max_positions(config, tokenizer=None) -> int | None:
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(text_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)  # transformers' "no limit" is a huge placeholder
    return limit if isinstance(limit, int) and 0 < limit < 10**7 else None
