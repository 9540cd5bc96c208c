"""The parity report as a self-contained HTML page (no scripts, no external files).

The headline figures with the gate verdict; for int8, the accuracy-aware
fallback's steps (ops kept in float, their MACs, size and latency cost) and
the most sensitive ops; the photos on which the two models disagree
(thumbnails embedded as data URIs, both answers with confidences); two
confusion matrices side by side (float model, converted model) shaded by row
share, and per-class accuracy bars for both models.
"""

from __future__ import annotations

import html
import math
from typing import Any

from converter.disagreements import NEAR_TIE, Disagreement
from converter.fallback import FallbackOutcome
from converter.sensitivity import QuantOp, SensitivityReport
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
table.rows{border-collapse:collapse;font-size:.85rem} table.rows td,table.rows th{border-bottom:1px solid #e3e7ee;padding:.25rem .6rem;text-align:left}
table.rows th{background:#f3f5f9} .mono{font-family:ui-monospace,monospace;font-size:.78rem;word-break:break-all;max-width:420px}
.grid{display:flex;flex-wrap:wrap;gap:.8rem} .card{width:150px;font-size:.78rem;border:1px solid #d5dae3;border-radius:.3rem;padding:.35rem}
.card img{display:block;max-width:140px;max-height:112px;margin-bottom:.25rem}
"""


def _op_label(op: QuantOp) -> str:
    """The op's id, with its output tensor when the id does not say it (ONNX node names)."""
    label = html.escape(op.name)
    if op.outputs and op.outputs[0] not in op.name:
        label += f"<br><span class='sub'>&rarr; {html.escape(op.outputs[0])}</span>"
    return label


SENSITIVE_SHOWN = 15
"""Most sensitive ops listed in the page (the JSON report has every op)."""


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


def _sensitivity(sensitivity: SensitivityReport) -> str:
    rows = []
    for rank, row in enumerate(sensitivity.top(SENSITIVE_SHOWN), start=1):
        sqnr = "-" if math.isinf(row.sqnr_db) else f"{row.sqnr_db:.1f} dB"
        rows.append(
            f"<tr><td>{rank}</td><td class='mono'>{_op_label(row.op)}</td>"
            f"<td>{html.escape(row.op.kind)}</td><td>{100 * row.added_noise:.4f}%</td>"
            f"<td>{sqnr}</td><td>{100 * row.mac_share:.2f}%</td></tr>"
        )
    return (
        f"<h2>Most sensitive ops</h2><p class='sub'>{len(sensitivity.ranked)} ops measured on "
        f"{sensitivity.images} calibration images: the int8 model's output of each op against "
        "the float model's; ranked by the noise the op adds (its output's noise power over signal "
        "power, minus its inputs'). Top "
        f"{min(SENSITIVE_SHOWN, len(sensitivity.ranked))}; the JSON report lists every op.</p>"
        "<table class='rows'><tr><th>#</th><th>op</th><th>kind</th><th>noise added</th>"
        "<th>output SQNR</th><th>MACs</th></tr>" + "".join(rows) + "</table>"
    )


def _fallback(fallback: FallbackOutcome, before: QualityReport | None, full_bytes: int) -> str:
    head = (
        f"<h2>Accuracy-aware fallback: {'gate passed' if fallback.passed else 'gate still failed'}</h2>"
        f"<p class='sub'>{html.escape(fallback.stopped)}."
    )
    if before is not None:
        head += (
            f" Full int8 before it: agreement {_pct(before.top1_agreement)}, "
            f"accuracy drop {before.accuracy_drop_points or 0:.2f} points."
        )
    head += "</p>"
    if fallback.baseline is not None:
        head += (
            f"<p>Steps chosen on {fallback.selection_images} photos "
            f"({html.escape(fallback.selection_set.removeprefix('selection: '))}): a step is kept "
            "only when it brings the scores closer to float's there (score error: mean distance "
            f"of the score vectors). Full int8 there: score error "
            f"{fallback.baseline.score_error:.5f}, agreement {_pct(fallback.baseline.agreement)}."
            " The gate still judges on the parity photos.</p>"
        )
    if fallback.float_ops:
        head += (
            f"<p>{len(fallback.float_ops)} ops kept in float, "
            f"{100 * fallback.float_mac_fraction:.2f}% of the MACs"
            + (
                f", invoke p50 x{fallback.latency_ratio:.2f} of full int8"
                if fallback.latency_ratio is not None
                else ""
            )
            + "</p>"
        )
    rows = []
    for step in fallback.steps:
        size = (
            "-"
            if step.model_bytes is None
            else f"{step.model_bytes / 1024:.0f} KiB ({step.model_bytes - full_bytes:+d} B)"
        )
        rows.append(
            f"<tr><td>{step.step}</td><td>{html.escape(step.action)}</td>"
            f"<td class='mono'>{html.escape(step.op)}</td><td>{html.escape(step.kind)}</td>"
            f"<td>{len(step.float_ops)}</td><td>{100 * step.float_mac_fraction:.2f}%</td>"
            + (
                "<td>-</td><td>-</td>"
                if step.selection is None
                else f"<td>{step.selection.score_error:.5f}</td>"
                f"<td>{_pct(step.selection.agreement)}</td>"
            )
            + f"<td>{_pct(step.agreement)}</td>"
            f"<td>{'-' if step.accuracy_drop is None else f'{step.accuracy_drop:.2f}'}</td>"
            f"<td>{'-' if step.latency_ratio is None else f'x{step.latency_ratio:.2f}'}</td>"
            f"<td>{size}</td></tr>"
        )
    candidates = "".join(
        f"<tr><td>{rank}</td><td class='mono'>{_op_label(c.op)}</td>"
        f"<td>{html.escape(c.op.kind)}</td><td>{len(c.group)}</td>"
        f"<td>{100 * c.gain:.1f}%</td><td>{100 * c.mac_share:.2f}%</td></tr>"
        for rank, c in enumerate(fallback.candidates[:SENSITIVE_SHOWN], start=1)
    )
    if candidates:
        candidates = (
            "<h3>Candidates, each kept in float alone (with the ops reading its output)</h3>"
            "<table class='rows'><tr><th>#</th><th>op</th><th>kind</th><th>ops</th>"
            "<th>output error removed</th><th>MACs</th></tr>" + candidates + "</table>"
        )
    return (
        head
        + "<h3>Steps</h3><table class='rows'><tr><th>step</th><th>action</th><th>op</th><th>kind</th>"
        "<th>ops in float</th><th>MACs in float</th><th>selection score error</th>"
        "<th>selection agreement</th><th>parity agreement</th><th>drop (points)</th>"
        "<th>latency vs int8</th><th>model size</th></tr>" + "".join(rows) + "</table>" + candidates
    )


def _disagreements(
    rows: list[Disagreement], float_near_ties: int | None = None, images: int = 0
) -> str:
    cards = []
    for row in rows:
        image = f"<img src='{row.thumbnail}' alt='photo {row.index}'>" if row.thumbnail else ""
        tie = " <span class='worse'>near tie</span>" if row.near_tie else ""
        runner_up = (
            f" (then {html.escape(row.float_runner_up)}, {100 * row.float_margin:.1f} points "
            f"behind){tie}"
            if row.float_runner_up
            else ""
        )
        cards.append(
            f"<div class='card'>{image}#{row.index} true <b>{html.escape(row.true_label)}</b><br>"
            f"float: {html.escape(row.float_label)} {100 * row.float_confidence:.1f}%{runner_up}<br>"
            f"converted: <span class='worse'>{html.escape(row.label)}</span> "
            f"{100 * row.confidence:.1f}%</div>"
        )
    shown = sum(1 for row in rows if row.thumbnail)
    note = f" (thumbnails of the first {shown})" if shown < len(rows) else ""
    ties = ""
    if float_near_ties is not None:
        ties = (
            f"<p>{sum(row.near_tie for row in rows)} of them are near ties: the float model's "
            f"top two answers within {100 * NEAR_TIE:g} points, which any rounding may swap. "
            f"The float model answers {float_near_ties} of the {images} photos that closely.</p>"
        )
    return (
        f"<h2>Photos the two models answer differently: {len(rows)}{note}</h2>{ties}"
        f"<div class='grid'>{''.join(cards) or '<p>none</p>'}</div>"
    )


def _preparation(preparation: dict[str, Any]) -> str:
    """What was done to the float model before int8 calibration."""
    parts = []
    equalised = preparation.get("equalisation")
    if equalised:
        parts.append(
            f"activation equalisation: {equalised['scaled']} of {equalised['channels']} channels "
            f"in {equalised['pairs']} convolution pairs scaled up (median x"
            f"{equalised['median_scale']:.2f}), from {equalised['images']} calibration images"
        )
    else:
        parts.append("no activation equalisation (--no-equalise)")
    rounding = preparation.get("rounding", "nearest")
    adaround = preparation.get("adaround")
    if rounding == "adaround" and adaround:
        parts.append(
            f"AdaRound: {adaround['changed']} of {adaround['weights']} weights rounded the other "
            f"way in {adaround['layers']} layers, layer output error x"
            f"{adaround['median_error_ratio']:.2f} of round-to-nearest (median)"
        )
    else:
        parts.append(f"weights rounded: {html.escape(str(rounding))}")
    head = preparation.get("float_head")
    if head:
        parts.append(
            f"classifier head ({' -> '.join(head['ops'])}) kept in float: "
            f"{100 * head['mac_fraction']:.3f}% of the MACs"
        )
    elif "float_head" in preparation:
        parts.append("classifier head int8 (--no-float-head, or none found)")
    return "<h2>Before calibration</h2><p>" + html.escape("; ".join(parts)) + ".</p>"


def render_report(
    report: QualityReport,
    title: str,
    labels: list[str],
    subtitle: str = "",
    *,
    sensitivity: SensitivityReport | None = None,
    fallback: FallbackOutcome | None = None,
    before_fallback: QualityReport | None = None,
    full_int8_bytes: int = 0,
    disagreements: list[Disagreement] | None = None,
    preparation: dict[str, Any] | None = None,
    float_near_ties: int | None = None,
) -> str:
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
        f"<table class='figures'>{figure_rows}</table>"
        + (_preparation(preparation) if preparation else "")
        + (_fallback(fallback, before_fallback, full_int8_bytes) if fallback is not None else "")
        + (
            _disagreements(disagreements, float_near_ties, report.dataset.num_images)
            if disagreements is not None
            else ""
        )
        + (_sensitivity(sensitivity) if sensitivity is not None else "")
        + matrices
        + "<h2>Per-class accuracy</h2><table class='bars'><tr><th>class</th><th>images</th>"
        "<th colspan='2'>float</th><th colspan='2'>converted</th></tr>"
        + "".join(bars)
        + "</table></body></html>\n"
    )
