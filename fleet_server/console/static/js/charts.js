// Charts drawn as inline SVG: a time series (one line per bundle), share bars, value bars.
// Each chart has a title and a text summary for screen readers; tables carry the exact figures.

import { h, svg } from "./dom.js";

const PALETTE = ["#1f6feb", "#c2410c", "#15803d", "#9333ea", "#b91c1c", "#0e7490", "#a16207"];

export function colourFor(key, keys) {
  return PALETTE[Math.max(0, keys.indexOf(key)) % PALETTE.length];
}

/**
 * A line chart of points[field] over points.at, one line per `series(point)` value (a bundle),
 * with an optional dashed limit line. `format` writes a value for the axis and the summary.
 */
export function lineChart({ title, points, field, series, names, format, limit }) {
  const width = 560;
  const height = 180;
  const pad = { left: 64, right: 12, top: 12, bottom: 28 };
  const known = points.filter((p) => p[field] !== null && p[field] !== undefined);
  const figure = h("figure", { class: "chart" }, h("figcaption", {}, title));
  if (known.length === 0) {
    figure.append(h("p", { class: "muted" }, "No telemetry with this figure yet."));
    return figure;
  }
  const t0 = known[0].at;
  const t1 = Math.max(known[known.length - 1].at, t0 + 1);
  const values = known.map((p) => p[field]);
  if (limit !== null && limit !== undefined) values.push(limit);
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (hi - lo < 1e-9) {
    hi += Math.abs(hi) * 0.1 + 1e-3;
    lo = Math.max(0, lo - Math.abs(lo) * 0.1);
  }
  const x = (t) => pad.left + ((t - t0) / (t1 - t0)) * (width - pad.left - pad.right);
  const y = (v) => height - pad.bottom - ((v - lo) / (hi - lo)) * (height - pad.top - pad.bottom);
  const keys = [...new Set(known.map(series))];
  const lines = keys.map((key) => {
    const mine = known.filter((p) => series(p) === key);
    const d = mine.map((p, i) => `${i ? "L" : "M"}${x(p.at).toFixed(1)},${y(p[field]).toFixed(1)}`);
    return svg("path", {
      d: d.join(" "),
      fill: "none",
      stroke: colourFor(key, keys),
      "stroke-width": 2,
      "data-series": key,
    });
  });
  const grid = [lo, (lo + hi) / 2, hi].map((v) => [
    svg("line", { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v), class: "grid" }),
    svg("text", { x: pad.left - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" }, format(v)),
  ]);
  const span = Math.round(t1 - t0);
  const axis = [
    svg("text", { x: pad.left, y: height - 8, class: "axis" }, new Date(t0 * 1000).toLocaleTimeString()),
    svg(
      "text",
      { x: width - pad.right, y: height - 8, "text-anchor": "end", class: "axis" },
      new Date(t1 * 1000).toLocaleTimeString(),
    ),
  ];
  const limitLine = limit === null || limit === undefined ? [] : [
    svg("line", {
      x1: pad.left, x2: width - pad.right, y1: y(limit), y2: y(limit), class: "limit",
    }),
  ];
  const last = known[known.length - 1];
  const summary = `${title}: ${known.length} points over ${span} s, latest ${format(last[field])}` +
    `, lowest ${format(Math.min(...known.map((p) => p[field])))}` +
    `, highest ${format(Math.max(...known.map((p) => p[field])))}.`;
  figure.append(
    svg(
      "svg",
      { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": summary, class: "plot" },
      grid.flat(),
      limitLine,
      lines,
      axis,
    ),
    legend(keys, names),
  );
  return figure;
}

export function legend(keys, names) {
  return h(
    "ul",
    { class: "legend" },
    keys.map((key) =>
      h(
        "li",
        {},
        svg(
          "svg",
          { class: "swatch", viewBox: "0 0 10 10", "aria-hidden": "true" },
          svg("rect", { width: 10, height: 10, fill: colourFor(key, keys) }),
        ),
        names(key),
      ),
    ),
  );
}

/** Horizontal bars of shares (0..1) per label: one row per group (a bundle), labels stacked. */
export function shareBars({ title, groups, names, labels }) {
  const figure = h("figure", { class: "chart" }, h("figcaption", {}, title));
  const keys = Object.keys(groups);
  if (keys.length === 0) {
    figure.append(h("p", { class: "muted" }, "No class counts in the telemetry yet."));
    return figure;
  }
  const width = 560;
  const row = 26;
  const left = 150;
  const parts = [];
  keys.forEach((key, i) => {
    let at = left;
    parts.push(svg("text", { x: 0, y: i * row + 17, class: "axis" }, names(key)));
    for (const label of labels) {
      const share = groups[key][label] || 0;
      const w = share * (width - left);
      if (w > 0) {
        parts.push(
          svg(
            "rect",
            { x: at, y: i * row + 4, width: w, height: row - 8, fill: colourFor(label, labels) },
            svg("title", {}, `${names(key)}: ${label} ${(100 * share).toFixed(1)}%`),
          ),
        );
      }
      at += w;
    }
  });
  const summary = keys
    .map((key) => `${names(key)}: ` + labels
      .filter((l) => groups[key][l])
      .map((l) => `${l} ${(100 * groups[key][l]).toFixed(0)}%`).join(", "))
    .join("; ");
  figure.append(
    svg(
      "svg",
      { viewBox: `0 0 ${width} ${keys.length * row}`, role: "img", "aria-label": `${title}: ${summary}`, class: "plot" },
      parts,
    ),
    legend(labels, (l) => l),
  );
  return figure;
}

/** Paired bars per label (e.g. float and converted accuracy per class), values 0..1. */
export function pairedBars({ title, rows, first, second }) {
  const width = 560;
  const row = 34;
  const left = 110;
  const parts = [];
  rows.forEach((r, i) => {
    const y0 = i * row;
    parts.push(svg("text", { x: 0, y: y0 + 20, class: "axis" }, r.label));
    [[r.a, 0, "#94a3b8", first], [r.b, 1, "#1f6feb", second]].forEach(([v, k, fill, name]) => {
      if (v === null || v === undefined) return;
      parts.push(
        svg(
          "rect",
          { x: left, y: y0 + 4 + k * 13, width: v * (width - left - 50), height: 11, fill },
          svg("title", {}, `${r.label}, ${name}: ${(100 * v).toFixed(1)}%`),
        ),
        svg("text", { x: left + v * (width - left - 50) + 4, y: y0 + 14 + k * 13, class: "axis" }, `${(100 * v).toFixed(0)}%`),
      );
    });
  });
  const summary = rows
    .map((r) => `${r.label}: ${first} ${r.a === null ? "n/a" : (100 * r.a).toFixed(1) + "%"}, ${second} ${(100 * r.b).toFixed(1)}%`)
    .join("; ");
  return h(
    "figure",
    { class: "chart narrow" },
    h("figcaption", {}, title),
    svg("svg", { viewBox: `0 0 ${width} ${rows.length * row}`, role: "img", "aria-label": `${title}: ${summary}`, class: "plot" }, parts),
    h("ul", { class: "legend" }, [[first, "#94a3b8"], [second, "#1f6feb"]].map(([label, fill]) =>
      h("li", {}, svg("svg", { class: "swatch", viewBox: "0 0 10 10", "aria-hidden": "true" },
        svg("rect", { width: 10, height: 10, fill })), label))),
  );
}
