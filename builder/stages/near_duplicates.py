"""Near-duplicate detection for short texts: MinHash signatures of character 5-gram shingles, compared with
numpy. The share of equal signature slots estimates the Jaccard similarity of two texts' shingle sets."""

import hashlib
import re

import numpy as np
import polars as pl

_SPACES = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """Case, runs of whitespace and end punctuation ignored: what makes two prompts the same prompt."""
    return _SPACES.sub(" ", text.lower()).strip(" .!?")


def normalised(column: pl.Expr) -> pl.Expr:
    """normalise_text as a polars expression."""
    return column.str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars(" .!?")


def shingles(text: str, size: int = 5) -> np.ndarray:
    text = normalise_text(text)
    grams = {text[i : i + size] for i in range(max(1, len(text) - size + 1))}
    return np.array([int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "little") for g in grams], dtype=np.uint64)


def signatures(texts: list[str], num_perm: int = 64, seed: int = 0) -> np.ndarray:
    """(len(texts), num_perm) MinHash signatures; permutation i is the multiply-shift hash (a_i x + b_i) >> 32
    on 64-bit words (numpy's uint64 arithmetic wraps, which is what multiply-shift wants)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, np.iinfo(np.uint64).max, num_perm, dtype=np.uint64, endpoint=True) | np.uint64(1)
    b = rng.integers(0, np.iinfo(np.uint64).max, num_perm, dtype=np.uint64, endpoint=True)
    out = np.empty((len(texts), num_perm), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for row, text in enumerate(texts):
            out[row] = ((np.outer(shingles(text), a) + b) >> np.uint64(32)).min(axis=0)
    return out


def similarity(rows: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Estimated Jaccard similarity of every row against every other: (len(rows), len(others))."""
    if len(rows) == 0 or len(others) == 0:
        return np.zeros((len(rows), len(others)))
    return (rows[:, None, :] == others[None, :, :]).mean(axis=2)


def near_duplicates_of_kept(sig: np.ndarray, threshold: float) -> list[int | None]:
    """Greedy, in order: a text is kept unless it is at least `threshold` similar to an earlier *kept* text.
    For each text, the index of the first such kept text (the text is then dropped), else None (kept).
    Comparing with kept texts only means a chain A ~ B ~ C with A and C far apart keeps A and C."""
    found: list[int | None] = [None] * len(sig)
    kept = np.zeros(len(sig), dtype=bool)
    for start in range(0, len(sig), 256):  # blocks keep memory at 256 x n x num_perm
        block = similarity(sig[start : start + 256], sig[: start + 256])
        for offset, row in enumerate(block):
            i = start + offset
            earlier = np.flatnonzero((row[:i] >= threshold) & kept[:i])
            if earlier.size:
                found[i] = int(earlier[0])
            else:
                kept[i] = True
    return found


def best_match(sig: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the most similar reference text, its similarity) for each text."""
    if len(sig) == 0 or len(reference) == 0:
        return np.zeros(len(sig), dtype=int), np.zeros(len(sig))
    sims = np.concatenate([similarity(sig[start : start + 256], reference) for start in range(0, len(sig), 256)])
    return sims.argmax(axis=1), sims.max(axis=1)
