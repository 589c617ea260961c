"""The metric functions on cases computed by hand."""

import math

import numpy as np
import pytest

from builder.judging.metrics import (
    average_ranks,
    group_metrics,
    kendall_tau_b,
    length_controlled_win_rate,
    shares_with_ci,
    spearman,
    summarise_groups,
)


def test_average_ranks_share_tied_places():
    assert average_ranks([10, 20, 20, 5]).tolist() == [2, 3.5, 3.5, 1]


def test_spearman_by_hand():
    assert spearman([1, 2, 3], [1, 2, 3]) == pytest.approx(1)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1)
    # ranks x (1, 2, 3), y (1, 3, 2): d^2 = 0 + 1 + 1 = 2, rho = 1 - 6*2 / (3*8) = 0.5
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    # with a tie: ranks x (1.5, 1.5, 3), y (1, 2, 3): Pearson of those = 0.866…
    assert spearman([4, 4, 5], [1, 2, 3]) == pytest.approx(math.sqrt(3) / 2)
    assert spearman([2, 2, 2], [1, 2, 3]) is None


def test_kendall_tau_b_by_hand():
    assert kendall_tau_b([1, 2, 3], [1, 2, 3]) == pytest.approx(1)
    # pairs (1,2) concordant, (1,3) concordant, (2,3) discordant: (2 - 1) / 3
    assert kendall_tau_b([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    # x has a tie: x-untied pairs 2, y-untied 3, concordant 2, discordant 0 → 2 / sqrt(6)
    assert kendall_tau_b([4, 4, 5], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    assert kendall_tau_b([1, 1], [1, 2]) is None


def test_group_metrics_perfect_agreement():
    g = group_metrics([5.0, 3.0, 1.0], [1, 2, 3])
    assert (g["pairs"], g["pairs_agreeing"], g["exact_match"]) == (3, 3, True)
    assert (g["n_top_scored"], g["n_top_scored_human_best"]) == (1, 1)
    assert g["spearman"] == pytest.approx(1) and g["kendall_tau"] == pytest.approx(1)


def test_group_metrics_ties_and_unscored_do_not_agree():
    # human: r0 best, r1 second, r2 and r3 equal last (that pair is not counted): 5 ordered pairs
    g = group_metrics([4.0, 4.0, None, 2.0], [1, 2, 3, 3])
    assert g["pairs"] == 5
    # r0>r1 tied (no), r0>r2 unscored (no), r0>r3 yes, r1>r2 unscored (no), r1>r3 yes
    assert (g["pairs_agreeing"], g["pairs_model_tied"], g["exact_match"]) == (2, 1, False)
    assert g["n_scored"] == 3 and g["n_top_scored"] == 0
    # correlations over the scored three: scores (4, 4, 2) against -rank (-1, -2, -3)
    assert g["spearman"] == pytest.approx(spearman([4, 4, 2], [-1, -2, -3]))
    assert g["kendall_tau"] == pytest.approx(2 / math.sqrt(6))


def test_five_best_counts_responses_scored_five():
    g = group_metrics([5.0, 5.0, 1.0], [2, 1, 3])
    assert (g["n_top_scored"], g["n_top_scored_human_best"]) == (2, 1)
    summary = summarise_groups([g, group_metrics([1.0, 2.0], [1, 2])])
    assert summary["five_best"] == pytest.approx(0.5) and summary["n_scored_five"] == 2
    # pairs: 3 + 1 = 4; agreeing: (r1>r0? tied 5=5 no; r1>r2 yes; r0>r2 yes) + (1>2 no) = 2
    assert summary["pairwise_accuracy"] == pytest.approx(2 / 4)
    assert summary["exact_match"] == 0
    assert summary["spearman_groups"] == 2 and summary["spearman"] == pytest.approx((spearman([5, 5, 1], [-2, -1, -3]) + -1) / 2)


def test_shares_and_wilson_interval():
    shares = shares_with_ci({"win": 30, "tie": 50, "loss": 20, "unparsed": 99})
    assert shares["win"]["share"] == pytest.approx(0.3) and shares["tie"]["share"] == pytest.approx(0.5)
    for k in ("win", "tie", "loss"):
        assert shares[k]["low"] < shares[k]["share"] < shares[k]["high"]
    # Wilson for 30 of 100 (by hand: centre 0.3073, half-width 0.0885)
    assert shares["win"]["low"] == pytest.approx(0.2189, abs=1e-3) and shares["win"]["high"] == pytest.approx(0.3958, abs=1e-3)
    # a clean sweep keeps an interval of honest width on the side it cannot see
    sweep = shares_with_ci({"win": 10})
    assert sweep["win"]["share"] == 1 and sweep["win"]["high"] == 1 and sweep["win"]["low"] == pytest.approx(0.7225, abs=1e-3)
    assert sweep["loss"]["share"] == 0 and sweep["loss"]["low"] == 0 and sweep["loss"]["high"] == pytest.approx(0.2775, abs=1e-3)
    assert shares_with_ci({})["win"]["share"] is None


def test_length_controlled_win_rate():
    # A wins exactly when it is longer: the preference is all length, so at zero difference it is about even
    diff = np.array([-30, -20, -10, 10, 20, 30, -25, 25], dtype=float)
    lc = length_controlled_win_rate(diff, (diff > 0).astype(float))
    assert lc["slope"] > 0 and lc["win_rate"] == pytest.approx(0.5, abs=1e-6)
    # A wins 3 of 4 whether longer or shorter: no length effect, and 0.75 at zero difference (a little shrunk)
    lc = length_controlled_win_rate(np.array([-10.0] * 4 + [10.0] * 4), np.array([1.0, 1, 1, 0] * 2))
    assert lc["slope"] == pytest.approx(0, abs=1e-9) and 0.72 < lc["win_rate"] < 0.75
    # a clean sweep stays finite
    assert 0.9 < length_controlled_win_rate(np.array([-1.0, 1, -2, 2]), np.ones(4))["win_rate"] < 1
    assert length_controlled_win_rate(np.array([]), np.array([]))["win_rate"] is None
    # the bootstrap interval holds the estimate and is fixed by its seed
    lc = length_controlled_win_rate(np.array([-10.0] * 10 + [10.0] * 10), np.array([1.0, 1, 1, 0] * 5))
    assert lc["low"] < lc["win_rate"] < lc["high"]
    assert length_controlled_win_rate(np.array([-10.0] * 10 + [10.0] * 10), np.array([1.0, 1, 1, 0] * 5)) == lc
