"""The evaluation report as one self-contained HTML page: tables and matplotlib plots inlined as
SVG (text drawn as paths), so it opens anywhere, offline, and can be attached to a pull request.
It is drawn from the JSON report alone, so the two never disagree."""

from __future__ import annotations

import html
import io
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

BLUE, ORANGE, GREY = "#2f6db5", "#e07b28", "#888888"

STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #1d1d1f; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
.meta { color: #555; font-size: .9rem; } .note { color: #555; font-size: .9rem; max-width: 60rem; }
table { border-collapse: collapse; font-size: .92rem; margin: .5rem 0; }
th, td { padding: .35rem .8rem; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; } tr.all td { font-weight: 600; }
.figures { display: flex; flex-wrap: wrap; gap: 1rem; } .figures svg { max-width: 100%; height: auto; }
.headline { display: flex; gap: 2rem; margin: 1rem 0; } .headline div { background: #f3f6fa; padding: .8rem 1.2rem;
            border-radius: 6px; } .headline b { display: block; font-size: 1.5rem; }
"""


def svg(figure: plt.Figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and doctype: inline SVG needs neither


def new_figure(width: float = 5.2, height: float = 3.6) -> tuple[plt.Figure, Any]:
    plt.rcParams.update({"svg.fonttype": "path", "font.size": 9})
    figure, axes = plt.subplots(figsize=(width, height))
    axes.spines[["top", "right"]].set_visible(False)
    return figure, axes


def margin_plot(report: dict) -> str:
    histogram = report["margin_histogram"]
    edges, counts = histogram["edges"], histogram["counts"]
    figure, axes = new_figure()
    widths = [b - a for a, b in zip(edges, edges[1:], strict=False)]
    colours = [BLUE if (a + b) / 2 > 0 else ORANGE for a, b in zip(edges, edges[1:], strict=False)]
    axes.bar(edges[:-1], counts, width=widths, align="edge", color=colours, edgecolor="white", linewidth=0.4)
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set_xlabel("reward margin  r(preferred) - r(rejected)")
    axes.set_ylabel("pairs")
    axes.set_title("Margin distribution (orange: ranked wrong)")
    return svg(figure)


def calibration_plot(report: dict) -> str:
    bins = report["calibration"]
    figure, axes = new_figure()
    axes.plot([0.5, 1], [0.5, 1], color=GREY, linestyle="--", linewidth=1, label="perfectly calibrated")
    confidence = [b["confidence"] for b in bins]
    accuracy = [b["accuracy"] for b in bins]
    sizes = [20 + 200 * b["pairs"] / max(x["pairs"] for x in bins) for b in bins]
    axes.plot(confidence, accuracy, color=BLUE, linewidth=1.2)
    axes.scatter(confidence, accuracy, s=sizes, color=BLUE, zorder=3, label="bins (area: pairs)")
    axes.set_xlim(0.48, 1.02)
    axes.set_ylim(min(0.0, *accuracy) - 0.02, 1.02)
    axes.set_xlabel("predicted probability of the predicted winner")
    axes.set_ylabel("share the humans preferred")
    axes.set_title(f"Calibration of /compare probabilities (ECE {_overall(report)['ece']:.3f})")
    axes.legend(loc="upper left", frameon=False)
    return svg(figure)


def length_plot(report: dict) -> str:
    bias = report["length"]
    figure, axes = new_figure()
    lengths = [max(length, 1) for length, _ in bias["sample"]]
    axes.scatter(lengths, [r for _, r in bias["sample"]], s=4, alpha=0.25, color=BLUE, linewidths=0)
    binned = bias["binned"]
    axes.plot(
        [max(b["mean_length"], 1) for b in binned],
        [b["mean_reward"] for b in binned],
        color=ORANGE,
        marker="o",
        linewidth=1.6,
        label="mean reward per length bin",
    )
    axes.set_xscale("log")
    axes.set_xlabel("response length (characters, log scale)")
    axes.set_ylabel("reward")
    axes.set_title(f"Reward vs length (Spearman {bias['spearman']:+.2f}, Pearson {bias['pearson']:+.2f})")
    axes.legend(loc="lower right", frameon=False)
    return svg(figure)


def length_accuracy_plot(report: dict) -> str:
    bias, overall = report["length"], _overall(report)
    figure, axes = new_figure(4.2, 3.6)
    labels = ["preferred\nis longer", "preferred\nis shorter", "all\npairs"]
    values = [bias["chosen_longer_accuracy"], bias["chosen_shorter_accuracy"], overall["accuracy"]]
    counts = [bias["chosen_longer_pairs"], bias["chosen_shorter_pairs"], overall["pairs"]]
    bars = axes.bar(labels, [0 if math.isnan(v) else v for v in values], color=[BLUE, ORANGE, GREY])
    for bar, value, count in zip(bars, values, counts, strict=True):
        axes.annotate(f"{value:.3f}\n({count} pairs)", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                      ha="center", va="bottom", fontsize=8)  # fmt: skip
    axes.axhline(0.5, color="black", linewidth=0.8, linestyle=":")
    axes.set_ylim(0, 1.15)
    axes.set_ylabel("pairwise accuracy")
    axes.set_title("Accuracy by which response is longer")
    return svg(figure)


def _overall(report: dict) -> dict:
    return next(s for s in report["subsets"] if s["name"] == "all")


def _subset_rows(report: dict) -> str:
    rows = []
    for s in report["subsets"]:
        low, high = s["accuracy_ci95"]
        cells = [
            html.escape(s["name"]),
            f"{s['pairs']}",
            f"{s['accuracy']:.3f}",
            f"{low:.3f} – {high:.3f}",
            f"{s['longer_wins']:.3f}",
            f"{s['mean_margin']:+.3f}",
            f"{s['log_loss']:.3f}",
            f"{s['ece']:.3f}",
        ]
        css = ' class="all"' if s["name"] == "all" else ""
        rows.append(f"<tr{css}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "\n".join(rows)


def render_html(report: dict) -> str:
    """The page for a report (EvalReport.as_dict(), or the JSON file read back)."""
    overall, bias = _overall(report), report["length"]
    quantiles = ", ".join(f"{k} {v:+.2f}" for k, v in report["margin_quantiles"].items())
    title = f"Reward model evaluation: {html.escape(report['model'])}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{STYLE}</style></head>
<body>
<h1>{title}</h1>
<p class="meta">scored by {html.escape(report["scorer"])} · split {html.escape(report["split"])} ·
data {html.escape(", ".join(report["data"]))} · {html.escape(report["created"])}</p>
<div class="headline">
  <div>pairwise accuracy<b>{overall["accuracy"]:.3f}</b>{overall["pairs"]} pairs</div>
  <div>"longer wins" baseline<b>{overall["longer_wins"]:.3f}</b>same pairs</div>
  <div>calibration error (ECE)<b>{overall["ece"]:.3f}</b>of p(preferred wins)</div>
  <div>reward–length Spearman<b>{bias["spearman"]:+.2f}</b>{bias["responses"]} responses</div>
</div>
<h2>Accuracy by subset</h2>
<table><tr><th>subset</th><th>pairs</th><th>accuracy</th><th>95% CI</th><th>longer wins</th><th>mean margin</th>
<th>log loss</th><th>ECE</th></tr>
{_subset_rows(report)}
</table>
<p class="note">Accuracy counts a tie as half right. "Longer wins" is the accuracy of always preferring the
longer response on the same pairs: a model near it may have learned length rather than quality.</p>
<h2>Margins and calibration</h2>
<div class="figures">{margin_plot(report)}{calibration_plot(report)}</div>
<p class="note">Margin quantiles: {quantiles}. The calibration curve bins pairs by the probability the
model gives its predicted winner; a well-calibrated model's points lie on the diagonal.</p>
<h2>Length bias</h2>
<div class="figures">{length_plot(report)}{length_accuracy_plot(report)}</div>
<p class="note">A length-biased reward model rises with length on the left, and is right far more often
where the preferred response is the longer one than where it is the shorter one on the right.</p>
</body></html>
"""
