"""Guided decoding for the transformers backend, with xgrammar (the grammar engine vLLM uses too).

Three rules, as logits processors that run before temperature and top-p:
- the mask: xgrammar's matcher allows only tokens that keep the answer a prefix of the constraint's regex;
- the budget: when the tokens left are only enough for the constraint's fixed tail, a row still in its free
  part may only take a token that contains the closer (where the regex allows one), so the tail always fits
  and no guided answer is cut by the token limit;
- the probe: the raw logits of the constraint's choices at every step, so that the answer's last token gets
  the probability of each choice (renormalised over the choices), which is what expected scores read.
"""

from importlib.metadata import PackageNotFoundError, version

from builder.core.records import Constraint

LIBRARY = "xgrammar"


def library() -> dict | None:
    """What guides the transformers backend, for judge specs and manifests; None when xgrammar is missing."""
    try:
        return {"library": LIBRARY, "version": version(LIBRARY), "closes_before_token_limit": True}
    except PackageNotFoundError:
        return None


def budget_reserve(constraint: Constraint) -> int:
    """Tokens kept for the closer, the tail (a token is at least one character) and the stop token."""
    return constraint.tail_chars + 2


class Guide:
    """One per model: the tokenizer as xgrammar sees it, and each regex compiled once (it takes seconds)."""

    def __init__(self, tokenizer, vocab_size: int, stop_ids: set[int]):
        import xgrammar

        self.xgr = xgrammar
        self.info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=sorted(stop_ids))
        self.compiler = xgrammar.GrammarCompiler(self.info)
        self.tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        self.compiled: dict[str, object] = {}
        self.closers: dict[str, list[int]] = {}
        self.forms: dict[tuple[str, ...], list[list[int]]] = {}
        self.vocab_size = vocab_size

    def processors(self, constraint: Constraint, max_new_tokens: int, prompt_length: int) -> tuple[list, "ChoiceProbe | None"]:
        """The logits processors for one generate call (they keep per-row state: never reuse them)."""
        if constraint.choices and constraint.choices not in self.forms:
            self.forms[constraint.choices] = self.choice_forms(constraint.choices)
        probe = ChoiceProbe(self.forms[constraint.choices]) if constraint.choices else None
        processors = [probe] if probe else []
        if constraint.regex is not None:
            if constraint.regex not in self.compiled:
                self.compiled[constraint.regex] = self.compiler.compile_regex(constraint.regex)
            if constraint.closer not in self.closers:
                self.closers[constraint.closer] = [i for i, text in enumerate(self.info.decoded_vocab) if constraint.closer.encode() in text]
            processors.append(
                GuidedLogits(self.xgr, self.compiled[constraint.regex], self.vocab_size, self.closers[constraint.closer],
                             max_new_tokens - budget_reserve(constraint), prompt_length)
            )
        return processors, probe

    def choice_forms(self, choices: tuple[str, ...]) -> list[list[int]]:
        """Token ids of every form the choices take in this vocabulary: e.g. "4" and "Ġ4" give two forms,
        each the ids of its prefix followed by every choice, in the choices' order."""
        ids = {token: i for i, token in enumerate(self.tokens) if token is not None}
        prefixes = {token[: -len(c)] for token in ids for c in choices if token.endswith(c)}
        return [[ids[p + c] for c in choices] for p in sorted(prefixes) if all(p + c in ids for c in choices)]


class GuidedLogits:
    """xgrammar's mask plus the budget rule (see the module docstring), for one batch of rows."""

    def __init__(self, xgr, compiled, vocab_size: int, closer_ids: list[int], close_from_step: int, prompt_length: int):
        self.xgr, self.compiled, self.vocab_size = xgr, compiled, vocab_size
        self.closer_ids, self.close_from_step, self.prompt_length = closer_ids, close_from_step, prompt_length
        self.matchers = None

    def __call__(self, input_ids, scores):
        import torch

        if self.matchers is None:
            self.matchers = [self.xgr.GrammarMatcher(self.compiled) for _ in range(input_ids.shape[0])]
            self.bitmask = self.xgr.allocate_token_bitmask(input_ids.shape[0], self.vocab_size)
            self.closed = torch.zeros(input_ids.shape[0], dtype=torch.bool)
            self.closer = torch.tensor(self.closer_ids, dtype=torch.long)
        else:
            last = input_ids[:, -1].tolist()
            for row, matcher in enumerate(self.matchers):
                if not matcher.is_terminated():
                    matcher.accept_token(last[row])
            self.closed |= torch.isin(input_ids[:, -1].cpu(), self.closer)
        for row, matcher in enumerate(self.matchers):
            if not matcher.is_terminated():
                matcher.fill_next_token_bitmask(self.bitmask, row)
        device = scores.device
        scores = scores.cpu() if device.type != "cuda" else scores
        self.xgr.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device))
        if input_ids.shape[1] - self.prompt_length >= self.close_from_step:
            scores = self.close(scores)
        return scores.to(device)

    def close(self, scores):
        import torch

        closer = self.closer.to(scores.device)
        allowed = scores[:, closer]
        forced = torch.full_like(scores, float("-inf"))
        forced[:, closer] = allowed
        # A row the regex does not yet let close (its free part is still too short) keeps the plain mask.
        must_close = (~self.closed.to(scores.device)) & torch.isfinite(allowed).any(dim=1)
        return torch.where(must_close[:, None], forced, scores)


class ChoiceProbe:
    """Keeps the raw logits of every form of the choices at every step; changes nothing."""

    def __init__(self, forms: list[list[int]]):
        import torch

        self.forms = torch.tensor(forms, dtype=torch.long).reshape(len(forms), -1)
        self.form_of = {token: f for f, ids in enumerate(forms) for token in ids}
        self.steps = []

    def __call__(self, input_ids, scores):
        if len(self.form_of):
            self.steps.append(scores[:, self.forms.flatten().to(scores.device)].float().cpu())
        return scores

    def probabilities(self, row: int, step: int, token: int) -> tuple[float, ...] | None:
        """The choices' probabilities at `step` of `row`, if that step's token is one of the choices."""
        form = self.form_of.get(token)
        if form is None or step >= len(self.steps):
            return None
        width = self.forms.shape[1]
        logits = self.steps[step][row, form * width : (form + 1) * width]
        return tuple(round(p, 6) for p in logits.softmax(dim=0).tolist())
