"""Pure metric functions: intervals for shares, the length-controlled win rate, and ranking agreement.

Conventions, stated once:
- Win/tie/loss shares are over the decided pairs (both orders parsed); unparsed pairs are counted apart.
- A share's 95% interval is Wilson's score interval: unlike the percentile bootstrap (or the normal
  approximation) it does not collapse to zero width when the share is 0 or 1 (0 of 10 gives 0–28%, not 0–0%).
  A count with halves (a tie counted ½) is used as it is: the usual approximation for ties.
- The length-controlled win rate's interval is a percentile bootstrap over pairs (fixed seed): the logistic
  fit is refitted on each resample.
- Ranking: human rank 1 is the best. A pair of responses the human ranked equal is not a pair to order.
  A pair the model scored equal, or where either response has no parsed score, does not agree.
  Spearman uses average ranks for ties; Kendall is tau-b, which corrects for ties on both sides. Both are
  undefined (and left out of the average) for a group where either side is constant or fewer than two
  responses are scored.
"""

import math
from statistics import NormalDist

import numpy as np

OUTCOMES = ("win", "tie", "loss")


def wilson_interval(successes: float, n: int, level: float = 0.95) -> tuple[float, float] | tuple[None, None]:
    """Wilson's score interval for a share successes / n; (None, None) when n is 0."""
    if n <= 0:
        return None, None
    z = NormalDist().inv_cdf(0.5 + level / 2)
    share = successes / n
    denominator = 1 + z * z / n
    centre = (share + z * z / (2 * n)) / denominator
    half = z * math.sqrt(max(share * (1 - share), 0.0) / n + z * z / (4 * n * n)) / denominator
    return (0.0 if successes <= 0 else max(0.0, centre - half)), (1.0 if successes >= n else min(1.0, centre + half))


def share_with_ci(successes: float, n: int, level: float = 0.95) -> dict:
    """{"share", "low", "high", "n"}: a share and its Wilson interval (all None over nothing)."""
    low, high = wilson_interval(successes, n, level)
    return {"share": successes / n if n else None, "low": low, "high": high, "n": n}


def shares_with_ci(counts: dict[str, int], level: float = 0.95) -> dict[str, dict]:
    """{outcome: {"share", "low", "high"}} over the decided outcomes in counts (keys win, tie, loss), each
    share with its Wilson interval."""
    total = sum(counts.get(k, 0) for k in OUTCOMES)
    return {k: {key: value for key, value in share_with_ci(counts.get(k, 0), total, level).items() if key != "n"} for k in OUTCOMES}


def length_controlled_win_rate(length_diff: np.ndarray, preference: np.ndarray, penalty: float = 0.1,
                               n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Logistic regression of A's preference (1 win, 0.5 tie, 0 loss) on the standardised length difference
    (len A - len B, divided by its standard deviation), fitted by Newton's method with a small L2 penalty so
    that a clean sweep stays finite. The length-controlled win rate is the fitted preference at zero length
    difference: sigmoid(intercept). `low`, `high`: its percentile bootstrap interval, resampling pairs."""
    y = np.asarray(preference, dtype=float)
    if y.size == 0:
        return {"win_rate": None, "low": None, "high": None, "intercept": None, "slope": None, "scale": None, "n": 0}
    diff = np.asarray(length_diff, dtype=float)
    scale = float(diff.std()) or 1.0
    x = np.column_stack([np.ones_like(diff), diff / scale])
    w = _logistic_fit(x, y, penalty)
    rng = np.random.default_rng(seed)
    rates = [_sigmoid(_logistic_fit(x[rows], y[rows], penalty)[0]) for rows in rng.integers(0, y.size, size=(n_boot, y.size))]
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(rates, [tail, 100 - tail]) if rates else (None, None)
    return {"win_rate": _sigmoid(w[0]), "low": None if low is None else float(low), "high": None if high is None else float(high),
            "intercept": float(w[0]), "slope": float(w[1]), "scale": scale, "n": int(y.size)}


def _sigmoid(value: float) -> float:
    return float(1 / (1 + math.exp(-value)))


def _logistic_fit(x: np.ndarray, y: np.ndarray, penalty: float) -> np.ndarray:
    w = np.zeros(x.shape[1])
    for _ in range(100):
        p = 1 / (1 + np.exp(-(x @ w)))
        gradient = x.T @ (y - p) - penalty * w
        hessian = (x.T * (p * (1 - p))) @ x + penalty * np.eye(x.shape[1])
        step = np.linalg.solve(hessian, gradient)
        w += step
        if np.abs(step).max() < 1e-10:
            break
    return w


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
