"""A benchmark run (`eval/benchmark.py`) as one self-contained HTML page: the headline figures,
then one section per subset with its figure, how far the right answers stood above the wrong
ones, and the prompts it got most wrong. Drawn from the JSON report alone, like the preference
report (`html_report.py`, whose style and plotting it shares)."""

from __future__ import annotations

import html
import math

from rewardserve.eval.html_report import BLUE, GREY, ORANGE, STYLE, new_figure, svg

WORST = 5  # prompts listed per subset: the lowest margins

RULES = {
    "rewardbench2": "Best-of-4: a prompt scores 1 / (completions tied at the top) when its first correct completion "
    "has the highest reward, else 0. Ties scores whether every correct answer beats every incorrect one, and whether "
    "the correct ones sit closer to each other than to the incorrect (0.3, 0.3, 0.2, 0.2 and 0.01 of its terms). "
    "The overall score is the mean of the six subsets.",
    "rewardbench": "A pair is right when the chosen completion's reward is strictly above the rejected one's. "
    "Sections weigh their subsets by the benchmark's example counts; the overall score is the mean of the sections.",
}


def subsets_plot(report: dict) -> str:
    subsets = report["subsets"]
    figure, axes = new_figure(max(5.2, 0.32 * len(subsets)), 3.4)
    names = [s["name"] for s in subsets]
    axes.bar(names, [100 * s["figure"] for s in subsets], color=BLUE)
    axes.axhline(100 * report["overall"], color=ORANGE, linewidth=1.2, label=f"overall {100 * report['overall']:.1f}")
    axes.set_ylim(0, 100)
    axes.set_ylabel("score")
    axes.tick_params(axis="x", labelrotation=45 if len(names) > 8 else 0)
    axes.legend(loc="upper right", frameon=False)
    axes.set_title("Score by subset")
    return svg(figure)


def margins_plot(name: str, margins: list[float]) -> str:
    figure, axes = new_figure(4.6, 2.8)
    finite = [m for m in margins if math.isfinite(m)]
    if finite:
        right = [m for m in finite if m > 0]
        wrong = [m for m in finite if m <= 0]
        bins = min(30, max(5, len(finite) // 3))
        axes.hist([wrong, right], bins=bins, stacked=True, color=[ORANGE, BLUE], edgecolor="white", linewidth=0.4)
    axes.axvline(0, color=GREY, linewidth=0.8)
    axes.set_xlabel("reward margin: right answer - best wrong one")
    axes.set_ylabel("prompts")
    axes.set_title(f"{name}: margins (orange: not above)")
    return svg(figure)


def _subset_section(report: dict, subset: dict) -> str:
    prompts = [p for p in report["prompts"] if p["subset"] == subset["name"]]
    worst = sorted((p for p in prompts if math.isfinite(p["margin"])), key=lambda p: p["margin"])[:WORST]
    rows = "".join(
        f"<tr><td>{html.escape(p['id'])}</td><td>{p['margin']:+.3f}</td><td>{p['result']:.2f}</td>"
        f"<td>{' '.join(f'{r:+.3f}' for r in p['rewards'])}</td></tr>"
        for p in worst
    )
    return f"""<section class="subset">
<h2>{html.escape(subset["name"])}: {100 * subset["figure"]:.1f}</h2>
<p class="meta">{subset["prompts"]} prompts</p>
<div class="figures">{margins_plot(subset["name"], [p["margin"] for p in prompts])}</div>
<table><tr><th>lowest margins: id</th><th>margin</th><th>result</th><th>rewards (correct first)</th></tr>
{rows}</table>
</section>"""


def render_benchmark_html(report: dict) -> str:
    """The page for a benchmark report (`evaluate_benchmark`'s, or its JSON read back)."""
    title = f"{html.escape(report['benchmark'])}: {html.escape(report['model'])}"
    judge = f" · {html.escape(report['judge'])} judge" if report["judge"] else ""
    sections = "".join(
        f"<div>{html.escape(name)}<b>{100 * value:.1f}</b>section</div>" for name, value in report["sections"].items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{STYLE}</style></head>
<body>
<h1>{title}</h1>
<p class="meta">scored by {html.escape(report["scorer"])} · precision {html.escape(str(report["precision"]))}{judge}
· {report["reward"]} rewards · template: {html.escape(report["template"])} · data {html.escape(report["data"])}
· {html.escape(report["created"])}</p>
<div class="headline"><div>overall<b>{100 * report["overall"]:.1f}</b>{len(report["prompts"])} prompts</div>
{sections}</div>
<div class="figures">{subsets_plot(report)}</div>
<p class="note">{RULES[report["benchmark"]]}</p>
{"".join(_subset_section(report, subset) for subset in report["subsets"])}
</body></html>
"""
