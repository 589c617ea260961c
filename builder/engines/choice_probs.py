"""The choices' probabilities at an answer's last token, from the top log-probabilities an engine or server
reports per token (vLLM's `logprobs`, OpenAI-compatible `top_logprobs`)."""

import math

TOP_LOGPROBS = 20  # vLLM's default ceiling (max_logprobs) and OpenAI's limit


def choice_probs(text: str, positions: list[tuple[str, dict[str, float]]], choices: tuple[str, ...]) -> tuple[float, ...] | None:
    """`positions`: per generated token, (its text, {alternative token text: logprob}). The answer must end with a
    choice; the token that wrote it (one of the last three: a stop token may follow) gives each choice's
    logprob as that token with the choice swapped in. A choice outside the reported top counts as 0; the rest
    are renormalised over the choices."""
    final = next((c for c in choices if text.rstrip().endswith(c)), None)
    if final is None:
        return None
    for chosen, top in reversed(positions[-3:]):
        if chosen.endswith(final):
            prefix = chosen[: len(chosen) - len(final)]
            logprobs = [top.get(prefix + c) for c in choices]
            known = [lp for lp in logprobs if lp is not None and math.isfinite(lp)]
            if not known:
                return None
            peak = max(known)
            weights = [math.exp(lp - peak) if lp is not None and math.isfinite(lp) else 0.0 for lp in logprobs]
            return tuple(round(w / sum(weights), 6) for w in weights)
    return None
