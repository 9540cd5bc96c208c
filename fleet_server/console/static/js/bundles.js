// Bundles: the catalogue, and one bundle's quality report (parity figures, per-class bars,
// confusion matrices), provenance and release signature status.

import { badge, bytes, facts, h, link, num, pct, short, swap, table, when } from "./dom.js";
import { pairedBars } from "./charts.js";

export function bundlesPage(ctx, selected) {
  const list = h("div", {});
  const detail = h("div", {});
  const node = h("div", {}, h("h1", {}, "Bundles"), list, detail);
  let catalogue = null;

  function drawList(bundles) {
    swap(
      list,
      table(
        "Every imported bundle, oldest release first",
        ["Bundle", "Format", "Precision", "Size", "Released", "Accuracy at conversion", "sha256"],
        bundles.map((b) => [
          link(`#/bundles/${b.sha256}`, `${b.name} ${b.version}`, `b-${b.sha256}`),
          b.format,
          b.precision,
          bytes(b.size),
          when(b.released_at),
          pct(b.baseline_accuracy),
          h("code", {}, short(b.sha256)),
        ]),
        { class: "bundles" },
      ),
    );
  }

  function confusion(title, matrix, labels) {
    if (!matrix) return null;
    const max = Math.max(1, ...matrix.flat());
    return h(
      "table",
      { class: "confusion" },
      h("caption", {}, `${title} (rows: true class, columns: predicted)`),
      h("thead", {}, h("tr", {}, h("td", {}), labels.map((l) => h("th", { scope: "col" }, l)))),
      h(
        "tbody",
        {},
        matrix.map((row, i) =>
          h(
            "tr",
            {},
            h("th", { scope: "row" }, labels[i]),
            row.map((n, j) =>
              h("td", { class: `heat h${Math.min(9, Math.round((9 * n) / max))}${i === j ? " diag" : ""}` }, n),
            ),
          ),
        ),
      ),
    );
  }

  function signature(s) {
    const ok = s.problem === null;
    return h(
      "div",
      { class: ok ? "ok" : "bad" },
      h("p", {}, badge(ok ? "signed" : "not-released"), " ", ok
        ? `listed in targets v${s.targets_version}, signed by the release key (${s.signed_by.join(", ")}), valid until ${s.expires}`
        : s.problem),
    );
  }

  function drawDetail(b) {
    const q = b.quality;
    const p = b.provenance || {};
    const c = b.compatibility || {};
    const parts = [
      h("h2", { id: "bundle-title" }, `${b.name} ${b.version}`),
      b.description ? h("p", {}, b.description) : null,
      h("section", { "aria-labelledby": "sig" }, h("h3", { id: "sig" }, "Release signature"), signature(b.signature)),
      h(
        "section",
        { "aria-labelledby": "parity" },
        h("h3", { id: "parity" }, "Quality report (measured at conversion)"),
        q === null
          ? h("p", {}, "This bundle carries no quality report.")
          : [
              facts([
                ["Data set", `${q.dataset.name}, ${q.dataset.num_images} images (sha256 ${short(q.dataset.sha256)})`],
                ["Float model accuracy", pct(q.float_accuracy)],
                ["Converted accuracy", pct(q.accuracy)],
                ["Accuracy drop", q.accuracy_drop_points === null ? "–" : `${num(q.accuracy_drop_points, 2)} points`],
                ["Top-1 agreement with float", pct(q.top1_agreement, 2)],
                ["Cosine similarity", num(q.cosine_similarity, 4)],
                ["KL divergence", num(q.kl_divergence, 5)],
                ["Mean confidence", pct(q.mean_confidence)],
                ["Parity gate", q.passed === null ? "–" : badge(q.passed ? "passed" : "failed")],
                ["Thresholds", Object.entries(q.thresholds).map(([k, v]) => `${k} ${v}`).join(", ") || "–"],
              ]),
              q.per_class.length
                ? pairedBars({
                    title: "Accuracy per class",
                    rows: q.per_class.map((r) => ({ label: `${r.label} (${r.support})`, a: r.float_accuracy, b: r.accuracy })),
                    first: "float",
                    second: `${b.format} ${b.precision}`,
                  })
                : null,
              h(
                "div",
                { class: "matrices" },
                confusion("Confusion, float model", q.confusion_float, b.labels),
                confusion(`Confusion, ${b.format} ${b.precision}`, q.confusion, b.labels),
              ),
            ],
        h("h4", {}, "Flipped images"),
        b.flipped_images && b.flipped_images.length
          ? h("ul", {}, b.flipped_images.map((f) => h("li", {}, f)))
          : h("p", { class: "muted" }, "The bundle carries no flipped images: the converter shows them in its HTML parity report, written beside the bundle on the workstation."),
      ),
      h(
        "section",
        { "aria-labelledby": "prov" },
        h("h3", { id: "prov" }, "Provenance"),
        facts([
          ["Source model sha256", h("code", {}, p.source_model_sha256 || "–")],
          ["Calibration data sha256", h("code", {}, p.calibration_data_sha256 || "–")],
          ["Parity data sha256", h("code", {}, p.parity_data_sha256 || "–")],
          ["Created by", p.created_by || "–"],
          ["Created at", p.created_at || "–"],
          ["Tools", Object.entries(p.tools || {}).map(([k, v]) => `${k} ${v}`).join(", ") || "–"],
        ]),
      ),
      h(
        "section",
        { "aria-labelledby": "compat" },
        h("h3", { id: "compat" }, "Compatibility and contents"),
        facts([
          ["Latency budget", c.latency_budget_ms ? `${c.latency_budget_ms} ms` : "none"],
          ["Ops kept in float", b.float_fallback
            ? `${b.float_fallback.ops.length} ops, ${pct(b.float_fallback.float_mac_fraction)} of the MACs (${b.float_fallback.ops.slice(0, 5).join(", ")}${b.float_fallback.ops.length > 5 ? ", ..." : ""})`
            : "none"],
          ["Minimum runtime", c.min_runtime_version || "–"],
          ["Backends", (c.backends || []).join(", ") || "any"],
          ["Device profiles", (c.device_profiles || []).join(", ") || "any"],
          ["Labels", b.labels.join(", ")],
          ["Golden vectors", b.golden_vectors],
          ["Devices running it now", b.devices_running],
          ["sha256", h("code", {}, b.sha256)],
        ]),
      ),
    ];
    swap(detail, h("article", { "aria-labelledby": "bundle-title" }, parts));
  }

  return {
    title: "Bundles",
    pollMs: 5000,
    async refresh() {
      const { data, changed } = await ctx.get("/bundles");
      if (changed || catalogue === null) {
        catalogue = data;
        drawList(data);
      }
      if (selected) {
        const found = await ctx.get(`/console/api/bundles/${selected}`);
        if (found.changed || detail.childElementCount === 0) drawDetail(found.data);
      } else if (detail.childElementCount === 0) {
        detail.append(h("p", { class: "muted" }, "Choose a bundle to see its quality report, provenance and signature."));
      }
    },
    node,
  };
}
