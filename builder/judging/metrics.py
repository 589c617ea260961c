"""Pure metric functions: bootstrap intervals, the length-controlled win rate, and ranking agreement.

Conventions, stated once:
- Win/tie/loss shares are over the decided pairs (both orders parsed); unparsed pairs are counted apart.
- Bootstrap: resampling n pairs with replacement from a categorical sample is a multinomial draw, so the
  interval comes from multinomial draws of the observed shares (percentile interval, fixed seed).
- Ranking: human rank 1 is the best. A pair of responses the human ranked equal is not a pair to order.
  A pair the model scored equal, or where either response has no parsed score, does not agree.
  Spearman uses average ranks for ties; Kendall is tau-b, which corrects for ties on both sides. Both are
  undefined (and left out of the average) for a group where either side is constant or fewer than two
  responses are scored.
"""

import math

import numpy as np

OUTCOMES = ("win", "tie", "loss")


def shares_with_ci(counts: dict[str, int], n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, dict]:
    """{outcome: {"share", "low", "high"}} over the decided outcomes in counts (keys win, tie, loss)."""
    observed = np.array([counts.get(k, 0) for k in OUTCOMES], dtype=float)
    total = observed.sum()
    if total == 0:
        return {k: {"share": None, "low": None, "high": None} for k in OUTCOMES}
    draws = np.random.default_rng(seed).multinomial(int(total), observed / total, size=n_boot) / total
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(draws, [tail, 100 - tail], axis=0)
    return {k: {"share": observed[i] / total, "low": float(low[i]), "high": float(high[i])} for i, k in enumerate(OUTCOMES)}


def length_controlled_win_rate(length_diff: np.ndarray, preference: np.ndarray, penalty: float = 0.1) -> dict:
    """Logistic regression of A's preference (1 win, 0.5 tie, 0 loss) on the standardised length difference
    (len A - len B, divided by its standard deviation), fitted by Newton's method with a small L2 penalty so
    that a clean sweep stays finite. The length-controlled win rate is the fitted preference at zero length
    difference: sigmoid(intercept)."""
    y = np.asarray(preference, dtype=float)
    if y.size == 0:
        return {"win_rate": None, "intercept": None, "slope": None, "scale": None, "n": 0}
    diff = np.asarray(length_diff, dtype=float)
    scale = float(diff.std()) or 1.0
    x = np.column_stack([np.ones_like(diff), diff / scale])
    w = np.zeros(2)
    for _ in range(100):
        p = 1 / (1 + np.exp(-(x @ w)))
        gradient = x.T @ (y - p) - penalty * w
        hessian = (x.T * (p * (1 - p))) @ x + penalty * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        w += step
        if np.abs(step).max() < 1e-10:
            break
    return {"win_rate": float(1 / (1 + math.exp(-w[0]))), "intercept": float(w[0]), "slope": float(w[1]), "scale": scale, "n": int(y.size)}


def average_ranks(values) -> np.ndarray:
    """1-based ranks, ascending, ties given the mean of the ranks they span."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    for end in range(1, len(values) + 1):
        if end == len(values) or sorted_values[end] != sorted_values[start]:
            ranks[order[start:end]] = (start + end + 1) / 2
            start = end
    return ranks


def spearman(x, y) -> float | None:
    rx, ry = average_ranks(x), average_ranks(y)
    if len(rx) < 2 or rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def kendall_tau_b(x, y) -> float | None:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    i, j = np.triu_indices(len(x), k=1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    untied_x, untied_y = np.count_nonzero(dx), np.count_nonzero(dy)
    if untied_x == 0 or untied_y == 0:
        return None
    return float((dx * dy).sum() / math.sqrt(untied_x * untied_y))


def group_metrics(scores: list[float | None], human_ranks: list[int], top_score: float = 5) -> dict:
    """Agreement of one group's model scores (None: no parsed score) with its human ranks (1 = best)."""
    score = np.array([np.nan if s is None else s for s in scores], dtype=float)
    rank = np.asarray(human_ranks, dtype=float)
    i, j = np.triu_indices(len(rank), k=1)
    ordered = rank[i] != rank[j]
    better, worse = np.where(rank[i] < rank[j], i, j)[ordered], np.where(rank[i] < rank[j], j, i)[ordered]
    agree = score[better] > score[worse]  # NaN compares False: an unscored response never agrees
    model_ties = score[better] == score[worse]
    scored = ~np.isnan(score)
    best = rank == rank.min()
    top = scored & (score == top_score)
    return {
        "pairs": int(ordered.sum()),
        "pairs_agreeing": int(agree.sum()),
        "pairs_model_tied": int(model_ties.sum()),
        "exact_match": bool(ordered.any() and agree.all()),
        "n_top_scored": int(top.sum()),
        "n_top_scored_human_best": int((top & best).sum()),
        "n_scored": int(scored.sum()),
        # negated human rank, so that agreement is a positive correlation
        "spearman": spearman(score[scored], -rank[scored]) if scored.sum() >= 2 else None,
        "kendall_tau": kendall_tau_b(score[scored], -rank[scored]) if scored.sum() >= 2 else None,
    }


def summarise_groups(groups: list[dict]) -> dict:
    """The paper's reward-modelling figures over all groups."""
    pairs = sum(g["pairs"] for g in groups)
    top = sum(g["n_top_scored"] for g in groups)
    spearmans = [g["spearman"] for g in groups if g["spearman"] is not None]
    kendalls = [g["kendall_tau"] for g in groups if g["kendall_tau"] is not None]
    return {
        "groups": len(groups),
        "pairs": pairs,
        "pairwise_accuracy": _ratio(sum(g["pairs_agreeing"] for g in groups), pairs),
        "model_tie_rate": _ratio(sum(g["pairs_model_tied"] for g in groups), pairs),
        "exact_match": _ratio(sum(g["exact_match"] for g in groups), len(groups)),
        "five_best": _ratio(sum(g["n_top_scored_human_best"] for g in groups), top),
        "n_scored_five": top,
        "spearman": float(np.mean(spearmans)) if spearmans else None,
        "spearman_groups": len(spearmans),
        "kendall_tau": float(np.mean(kendalls)) if kendalls else None,
        "kendall_groups": len(kendalls),
    }


def _ratio(part, whole) -> float | None:
    return part / whole if whole else None
