"""Small bar charts as inline SVG, drawn on the server: no script, no external file, so a page works offline.

One chart: categories along x, one bar per series in each category, a shared y scale from zero; every bar
carries a tooltip with its exact value. Text is escaped; the markup is safe to put in a page as it is."""

from markupsafe import Markup, escape

PALETTE = ["#3b6ea5", "#d9822b", "#6a9f58", "#b5495b", "#7d6bb0"]
WIDTH, HEIGHT = 440, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 10, 26, 46


def bar_chart(title: str, categories: list[str], series: dict[str, list[float]], x_label: str = "", y_label: str = "") -> Markup:
    if not categories or not series:
        return Markup(f'<p class="empty">{escape(title)}: nothing to plot</p>')
    top = max((v for values in series.values() for v in values if v is not None), default=0) or 1
    top_margin = TOP + (14 if len(series) > 1 else 0)  # room for the legend under the title
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - top_margin - BOTTOM
    slot = plot_w / len(categories)
    bar_w = max(1.0, slot * 0.8 / len(series))
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<text x="{LEFT}" y="16" class="chart-title">{escape(title)}</text>',
        f'<line x1="{LEFT}" y1="{top_margin + plot_h}" x2="{WIDTH - RIGHT}" y2="{top_margin + plot_h}" class="axis"/>',
        f'<line x1="{LEFT}" y1="{top_margin}" x2="{LEFT}" y2="{top_margin + plot_h}" class="axis"/>',
        f'<text x="{LEFT - 4}" y="{top_margin + 4}" text-anchor="end" class="tick">{_number(top)}</text>',
        f'<text x="{LEFT - 4}" y="{top_margin + plot_h}" text-anchor="end" class="tick">0</text>',
    ]
    label_every = max(1, round(len(categories) / 12))
    for i, category in enumerate(categories):
        for j, (name, values) in enumerate(series.items()):
            value = values[i] or 0
            h = plot_h * value / top
            x = LEFT + i * slot + slot * 0.1 + j * bar_w
            tip = f"{name}, {category}: {_number(value)}" if len(series) > 1 else f"{category}: {_number(value)}"
            parts.append(
                f'<rect x="{x:.1f}" y="{top_margin + plot_h - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{PALETTE[j % len(PALETTE)]}">'
                f"<title>{escape(tip)}</title></rect>"
            )
        if i % label_every == 0:
            parts.append(f'<text x="{LEFT + (i + 0.5) * slot:.1f}" y="{top_margin + plot_h + 14}" text-anchor="middle" class="tick">{escape(category)}</text>')
    if x_label:
        parts.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle" class="label">{escape(x_label)}</text>')
    if y_label:
        parts.append(f'<text x="12" y="{top_margin + plot_h / 2:.1f}" text-anchor="middle" class="label" transform="rotate(-90 12 {top_margin + plot_h / 2:.1f})">{escape(y_label)}</text>')
    if len(series) > 1:
        for j, name in enumerate(series):
            x = LEFT + 80 * j
            parts.append(f'<rect x="{x}" y="22" width="10" height="10" fill="{PALETTE[j % len(PALETTE)]}"/>')
            parts.append(f'<text x="{x + 14}" y="31" class="tick">{escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
