"""PNG plots written next to the results. matplotlib is optional (the `plots` extra): without it, no plot
and no error; the card then says there is no plot."""

import io


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _png(figure, plt) -> bytes:
    buffer = io.BytesIO()
    # no timestamp in the file: the same results give the same bytes
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def outcome_bars(matches: list[dict]) -> bytes | None:
    """One stacked bar per match: win / tie / loss of the decided pairs, with 95% intervals on wins and losses."""
    plt = _pyplot()
    if plt is None:
        return None
    figure, axis = plt.subplots(figsize=(7, 0.7 + 0.6 * len(matches)))
    names = [m["match"] for m in matches][::-1]
    left = [0.0] * len(matches)
    for outcome, colour in (("win", "#2a9d8f"), ("tie", "#bbbbbb"), ("loss", "#e76f51")):
        widths = [100 * (m[f"{outcome}_rate"] or 0) for m in matches][::-1]
        axis.barh(names, widths, left=left, color=colour, label=outcome)
        left = [a + b for a, b in zip(left, widths)]
    for row, m in enumerate(matches[::-1]):
        if m["decided"]:
            axis.errorbar(100 * m["win_rate"], row, xerr=[[100 * (m["win_rate"] - m["win_low"])], [100 * (m["win_high"] - m["win_rate"])]], color="black", capsize=3)
        note = f"n={m['decided']}" + (f", {m['unparsed']} unparsed" if m["unparsed"] else "")
        axis.text(101, row, note, va="center", fontsize=8)
    axis.set_xlim(0, 100)
    axis.set_xlabel("% of decided pairs (A's side)")
    axis.legend(ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    return _png(figure, plt)


def score_histogram(histogram: dict[str, int], title: str) -> bytes | None:
    plt = _pyplot()
    if plt is None:
        return None
    figure, axis = plt.subplots(figsize=(5, 3))
    scores = [str(s) for s in range(6)] + sorted(set(histogram) - {str(s) for s in range(6)})
    axis.bar(scores, [histogram.get(s, 0) for s in scores], color="#457b9d")
    axis.set_xlabel("score")
    axis.set_ylabel("parsed judgments")
    axis.set_title(title, fontsize=10)
    return _png(figure, plt)
