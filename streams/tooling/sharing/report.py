"""The transparency report: one self-contained HTML page (its PNG charts embedded as data URIs,
so the file can be mailed or archived alone) and the same figures as JSON beside it."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes

# A Figure of its own draws with the Agg canvas, off-screen: no pyplot, so no global backend
# or figure registry, no display and no GUI toolkit.
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

Figures = dict[str, Any]
COLOURS = ("#1f6feb", "#d1242f", "#1a7f37", "#bf8700", "#8250df", "#57606a", "#cf222e",
           "#0969da")
STATUS_COLOURS = {"open": "#d1242f", "merged": "#8250df", "withdrawn": "#57606a"}


def bar(ax: Axes, values: dict[str, Any], colour: str = COLOURS[0]) -> None:
    labels = [k.replace("_", " ") for k in values]
    numbers = [v or 0 for v in values.values()]
    bars = ax.bar(labels, numbers, color=colour)
    ax.bar_label(bars, labels=[str(n) for n in numbers], padding=2)
    ax.set_ylim(0, max([1, *numbers]) * 1.2)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(axis="x", labelrotation=20)


def alerts_chart(ax: Axes, figures: Figures) -> None:
    over_time = figures["alerts"]["over_time"]
    bins = [b[5:16].replace("T", " ") for b in over_time["bins"]]  # MM-DD HH:MM
    bottom = [0] * len(bins)
    for n, (rule, counts) in enumerate(over_time["rules"].items()):
        ax.bar(range(len(bins)), counts, bottom=bottom, label=rule,
               color=COLOURS[n % len(COLOURS)])
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    if over_time["rules"]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    else:
        ax.text(0.5, 0.5, "no alerts in this range", ha="center", transform=ax.transAxes)
    ax.set_ylabel(f"alerts per {over_time['bin_seconds'] // 60} min")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    step = max(1, len(bins) // 12)
    ax.set_xticks(range(0, len(bins), step), bins[::step], rotation=45, fontsize=7)


def campaigns_chart(ax: Axes, figures: Figures) -> None:
    rows = figures["campaigns"]
    if not rows:
        ax.text(0.5, 0.5, "no campaigns in this range", ha="center", transform=ax.transAxes)
        ax.set_yticks([])
        return
    names = [r["campaign_id"] for r in rows]
    bars = ax.barh(names, [r["accounts"] for r in rows],
                   color=[STATUS_COLOURS.get(r["status"], COLOURS[5]) for r in rows])
    ax.bar_label(bars, padding=2, fontsize=8, labels=[
        f"{r['status']}, first report after {r['minutes_to_first_report']} min"
        for r in rows])
    ax.set_xlabel("accounts")
    ax.set_xlim(0, max(r["accounts"] for r in rows) * 1.9)
    ax.invert_yaxis()


def delay_chart(ax: Axes, figures: Figures) -> None:
    delays = {k: v for k, v in figures["detection_delay"].items() if v["measured"]}
    if not delays:
        ax.text(0.5, 0.5, "no alert measured in this range", ha="center",
                transform=ax.transAxes)
        return
    positions = range(len(delays))
    medians = [v["median_s"] / 60 for v in delays.values()]
    p90s = [v["p90_s"] / 60 for v in delays.values()]
    ax.bar([p - 0.2 for p in positions], medians, width=0.4, label="median", color=COLOURS[0])
    ax.bar([p + 0.2 for p in positions], p90s, width=0.4, label="90th percentile",
           color=COLOURS[3])
    ax.set_xticks(list(positions), list(delays), rotation=20)
    ax.set_ylabel("minutes of event time")
    ax.legend(fontsize=8)


CHARTS: dict[str, tuple[str, Callable[[Axes, Figures], None]]] = {
    "alerts": ("Alerts per rule over time (by the start of their incident)", alerts_chart),
    "campaigns": ("Campaigns: accounts, status, time to first report", campaigns_chart),
    "accounts": ("Accounts flagged, suspended, reversed by an analyst",
                 lambda ax, f: bar(ax, {k: v for k, v in f["accounts"].items()
                                        if k != "implied_false_positive_rate"})),
    "suspensions": ("Suspensions", lambda ax, f: bar(ax, f["suspensions"], COLOURS[1])),
    "pages": ("Pages", lambda ax, f: bar(ax, f["pages"], COLOURS[2])),
    "delay": ("Detection delay per detector", delay_chart),
}


def chart_png(name: str, figures: Figures) -> bytes:
    title, draw = CHARTS[name]
    fig = Figure(figsize=(8.5, 3.2), dpi=100)
    ax = fig.subplots()
    draw(ax, figures)
    ax.set_title(title, fontsize=11, loc="left")
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        return html.escape("—" if value is None else
                           ", ".join(map(str, value)) if isinstance(value, list) else str(value))
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


PAGE_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem;
       color: #1f2328; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
.lead { color: #57606a; margin-top: 0; }
.figures { display: flex; gap: 1rem; flex-wrap: wrap; }
.figure { border: 1px solid #d0d7de; border-radius: 6px; padding: 0.5rem 1rem; }
.figure b { display: block; font-size: 1.4rem; }
img { max-width: 100%; border: 1px solid #d0d7de; border-radius: 6px; }
table { border-collapse: collapse; margin-top: 0.5rem; font-size: 13px; }
th, td { border-bottom: 1px solid #d0d7de; padding: 0.25rem 0.6rem; text-align: left; }
"""


def page(figures: Figures, charts: dict[str, bytes]) -> str:
    def image(name: str) -> str:
        data = base64.b64encode(charts[name]).decode("ascii")
        return (f'<img class="chart" id="chart-{name}" alt="{html.escape(CHARTS[name][0])}" '
                f'src="data:image/png;base64,{data}">')

    accounts, span = figures["accounts"], figures["range"]
    rate = accounts["implied_false_positive_rate"]
    numbers = {"alerts": figures["alerts"]["total"], "campaigns": len(figures["campaigns"]),
               "accounts flagged": accounts["flagged"],
               "implied false-positive rate": "—" if rate is None else f"{rate:.1%}",
               "suspensions sent": figures["suspensions"]["sent"]
               + figures["suspensions"]["sent_after_approval"],
               "pages sent": figures["pages"]["sent"]}
    delays = figures["detection_delay"]
    sections = [
        f"<h1>misuse-detector transparency report</h1><p class=lead>{html.escape(span['from'])}"
        f" to {html.escape(span['to'])} &middot; read from the indices analysts use; "
        "shadow-mode rules left out; figures also in figures.json</p>",
        '<div class="figures">' + "".join(
            f'<div class="figure"><b>{html.escape(str(v))}</b>{html.escape(k)}</div>'
            for k, v in numbers.items()) + "</div>",
        "<h2>Alerts</h2>", image("alerts"),
        "<h2>Campaigns</h2>", image("campaigns"),
        table(["campaign", "terms", "accounts", "prompts", "languages", "first seen",
               "minutes to first report", "status"],
              [[r["campaign_id"], r["label_terms"], r["accounts"], r["prompts"],
                r["languages"], r["first_seen"], r["minutes_to_first_report"], r["status"]]
               for r in figures["campaigns"]]),
        "<h2>Accounts</h2>", image("accounts"),
        "<p>Reversed: flagged, then cleared or allowlisted by an analyst; reversed over "
        "flagged is the false-positive rate the analysts' decisions imply (unreviewed accounts "
        "count as rightly flagged).</p>",
        "<h2>Suspensions and pages</h2>", image("suspensions"), image("pages"),
        "<h2>Detection delay</h2>", image("delay"),
        "<p>Event time from the first event of an alert's evidence window to the event at "
        "which its rule held, over alerts not updated since they fired (an updated alert keeps "
        "only its latest window).</p>",
        table(["detector", "alerts measured", "updated since (not measured)", "median s",
               "p90 s"], [[d, v["measured"], v["updated_since"], v["median_s"], v["p90_s"]]
                          for d, v in delays.items()]),
    ]
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width, initial-scale=1'>"
            "<title>misuse-detector transparency report</title>"
            f"<link rel=icon href='data:,'><style>{PAGE_STYLE}</style></head><body>"
            + "\n".join(sections) + "</body></html>\n")


def write_report(figures: Figures, out_dir: Path) -> Path:
    """`out_dir`/report.html and `out_dir`/figures.json; returns the page's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = {name: chart_png(name, figures) for name in CHARTS}
    (out_dir / "figures.json").write_text(json.dumps(figures, indent=2) + "\n",
                                          encoding="utf-8")
    path = out_dir / "report.html"
    path.write_text(page(figures, charts), encoding="utf-8")
    return path
