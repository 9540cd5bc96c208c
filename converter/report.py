"""The parity report as a self-contained HTML page (no scripts, no external files).

Two confusion matrices side by side (float model, converted model) shaded by
row share, per-class accuracy bars for both models, and the headline figures
with the gate verdict.
"""

from __future__ import annotations

import html

from edge_runtime.bundle import QualityReport

__all__ = ["render_report"]

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;color:#1d2430;max-width:1100px}
h1{font-size:1.4rem;margin-bottom:.2rem} .sub{color:#5b6678;margin-top:0}
.verdict{display:inline-block;padding:.2rem .6rem;border-radius:.3rem;color:#fff;font-weight:600}
.pass{background:#1f8a4c} .fail{background:#c0392b}
table.figures td{padding:.15rem .8rem .15rem 0} .pair{display:flex;gap:2rem;flex-wrap:wrap}
table.cm{border-collapse:collapse;font-size:.85rem} table.cm td,table.cm th{border:1px solid #d5dae3;padding:.3rem .45rem;text-align:center;min-width:2.2rem}
table.cm th{background:#f3f5f9;font-weight:600} .axis{font-size:.8rem;color:#5b6678}
.bars td{padding:.15rem .5rem;font-size:.85rem} .bar{height:.7rem;border-radius:.2rem}
.f{background:#8aa4c8} .q{background:#2c5aa0} .worse{color:#c0392b;font-weight:600}
"""


def _confusion(title: str, matrix: list[list[int]], labels: list[str]) -> str:
    rows = []
    for i, row in enumerate(matrix):
        total = sum(row) or 1
        cells = []
        for j, count in enumerate(row):
            share = count / total
            colour = f"rgba(44,90,160,{share:.3f})" if i != j else f"rgba(31,138,76,{share:.3f})"
            text = "#fff" if share > 0.5 else "#1d2430"
            cells.append(f'<td style="background:{colour};color:{text}">{count}</td>')
        rows.append(f"<tr><th>{html.escape(labels[i])}</th>{''.join(cells)}</tr>")
    head = "".join(f"<th>{html.escape(label)}</th>" for label in labels)
    return (
        f"<div><h3>{html.escape(title)}</h3><table class='cm'><tr><th class='axis'>true \\ predicted</th>{head}</tr>"
        + "".join(rows)
        + "</table></div>"
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def render_report(report: QualityReport, title: str, labels: list[str], subtitle: str = "") -> str:
    """The HTML page for one converted model's parity report."""
    verdict = (
        "<span class='verdict pass'>gate passed</span>"
        if report.passed
        else "<span class='verdict fail'>gate FAILED</span>"
    )
    thresholds = ", ".join(f"{k} {v:g}" for k, v in sorted(report.thresholds.items()))
    figures = [
        ("float accuracy", _pct(report.float_accuracy)),
        ("converted accuracy", _pct(report.accuracy)),
        (
            "accuracy drop",
            f"{report.accuracy_drop_points:.2f} points"
            if report.accuracy_drop_points is not None
            else "-",
        ),
        ("top-1 agreement", _pct(report.top1_agreement)),
        (
            "mean cosine similarity",
            f"{report.cosine_similarity:.5f}" if report.cosine_similarity is not None else "-",
        ),
        (
            "mean KL divergence",
            f"{report.kl_divergence:.5f}" if report.kl_divergence is not None else "-",
        ),
        (
            "images",
            f"{report.dataset.num_images} ({html.escape(report.dataset.name)}, sha256 {report.dataset.sha256[:12]}…)",
        ),
        ("thresholds", html.escape(thresholds) or "-"),
    ]
    figure_rows = "".join(f"<tr><td>{k}</td><td><b>{v}</b></td></tr>" for k, v in figures)
    bars = []
    for row in report.per_class:
        f = row.float_accuracy or 0.0
        worse = row.float_accuracy is not None and row.accuracy < row.float_accuracy
        bars.append(
            f"<tr><td>{html.escape(row.label)}</td><td>{row.support}</td>"
            f"<td><div class='bar f' style='width:{200 * f:.0f}px'></div></td><td>{_pct(row.float_accuracy)}</td>"
            f"<td><div class='bar q' style='width:{200 * row.accuracy:.0f}px'></div></td>"
            f"<td class='{'worse' if worse else ''}'>{_pct(row.accuracy)}</td></tr>"
        )
    matrices = ""
    if report.confusion_float is not None and report.confusion is not None:
        matrices = (
            "<h2>Confusion matrices</h2><div class='pair'>"
            + _confusion("float model", report.confusion_float, labels)
            + _confusion("converted model", report.confusion, labels)
            + "</div>"
        )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)} {verdict}</h1><p class='sub'>{html.escape(subtitle)}</p>"
        f"<table class='figures'>{figure_rows}</table>{matrices}"
        "<h2>Per-class accuracy</h2><table class='bars'><tr><th>class</th><th>images</th>"
        "<th colspan='2'>float</th><th colspan='2'>converted</th></tr>"
        + "".join(bars)
        + "</table></body></html>\n"
    )
