// Rollouts: the list, and the form that creates one (bundle, target, waves, thresholds, windows).

import { badge, h, link, short, swap, table, timeEl } from "./dom.js";

const GATE_FIELDS = [
  ["min_samples", "Predictions needed before a check decides", "200", "1"],
  ["max_latency_ratio", "Latency p95, new over previous (x)", "1.5", "0.01"],
  ["max_budget_ratio", "Latency p95 over the bundle's budget (x)", "1.0", "0.01"],
  ["max_error_rate", "Inference error rate", "0.01", "0.001"],
  ["max_confidence_drop", "Mean confidence drop from the previous version", "0.05", "0.01"],
  ["max_baseline_confidence_drop", "Mean confidence drop from the quality report", "0.15", "0.01"],
  ["max_class_shift", "Class shift from the previous version (JS divergence)", "0.1", "0.01"],
  ["max_baseline_class_shift", "Class shift from the quality report (JS divergence)", "0.2", "0.01"],
];
const WAVE_DEFAULTS = [
  { kind: "count", value: "1" },
  { kind: "percent", value: "40" },
  { kind: "percent", value: "100" },
];

function field(id, label, input, hint) {
  return h("div", { class: "field" }, h("label", { for: id }, label), input, hint ? h("small", {}, hint) : null);
}

function waveRow(index, preset, remove) {
  const p = `wave-${index}`;
  const kind = h(
    "select",
    { id: `${p}-kind`, name: "kind" },
    ["count", "percent", "tags", "devices"].map((k) => h("option", { value: k, selected: k === preset.kind }, k)),
  );
  return h(
    "fieldset",
    { class: "wave", "data-wave": index },
    h("legend", {}, index === 0 ? "Wave 1 (canary)" : `Wave ${index + 1}`),
    field(`${p}-kind`, "Selects by", kind),
    field(`${p}-value`, "How many / which", h("input", { id: `${p}-value`, name: "value", value: preset.value, required: true }),
      "a count, a percentage of all targets, or comma-separated tags or device ids"),
    field(`${p}-success`, "Success threshold", h("input", { id: `${p}-success`, name: "success", type: "number", min: "0.01", max: "1", step: "0.01", value: "1" })),
    field(`${p}-timeout`, "Device timeout (s)", h("input", { id: `${p}-timeout`, name: "timeout", type: "number", min: "1", step: "1", value: "600" })),
    field(`${p}-health`, "Health window (s)", h("input", { id: `${p}-health`, name: "health", type: "number", min: "0", step: "0.5", value: "60" })),
    field(`${p}-gate-timeout`, "Gate timeout (s, blank: wait)", h("input", { id: `${p}-gate-timeout`, name: "gate_timeout", type: "number", min: "1", step: "1", value: "300" })),
    h("label", { class: "check" }, h("input", { type: "checkbox", name: "approval" }), " wait for an operator's approval after this wave"),
    remove ? h("button", { type: "button", class: "link", onclick: remove }, `Remove wave ${index + 1}`) : null,
  );
}

function readWave(fieldset, gate) {
  const value = (name) => fieldset.querySelector(`[name="${name}"]`).value.trim();
  const kind = value("kind");
  const raw = value("value");
  const wave = {
    success_threshold: Number(value("success")),
    device_timeout_s: Number(value("timeout")),
    health_window_s: Number(value("health")),
    gate,
    approval_before_next: fieldset.querySelector('[name="approval"]').checked,
  };
  if (value("gate_timeout")) wave.gate_timeout_s = Number(value("gate_timeout"));
  if (kind === "count") wave.count = Number(raw);
  else if (kind === "percent") wave.percent = Number(raw);
  else wave[kind] = raw.split(",").map((s) => s.trim()).filter(Boolean);
  return wave;
}

function createForm(ctx, bundles, windows, fleet) {
  const allowed = ctx.may("operator");
  const error = h("p", { class: "error", role: "alert" });
  const byVersion = bundles.slice().reverse();
  const bundle = h("select", { id: "new-bundle", name: "bundle", required: true },
    byVersion.map((b) => h("option", { value: b.sha256 }, `${b.name} ${b.version} (${b.format} ${b.precision})`)));
  const running = {};
  for (const d of fleet.devices) if (d.bundle) running[d.bundle] = (running[d.bundle] || 0) + 1;
  const mostRun = Object.entries(running).sort((a, b) => b[1] - a[1])[0]?.[0] || "";
  const previous = h("select", { id: "new-previous", name: "previous" },
    h("option", { value: "" }, "none: withdraw the assignment"),
    byVersion.map((b) => h("option", { value: b.sha256, selected: b.sha256 === mostRun }, `${b.name} ${b.version}`)));
  const targetKind = h("select", { id: "new-target-kind", name: "target_kind" },
    ["tags", "devices", "all"].map((k) => h("option", { value: k }, k === "all" ? "every device" : `devices with ${k === "tags" ? "these tags" : "these ids"}`)));
  const targetValues = h("input", { id: "new-target", name: "target", value: fleet.tags[0] || "", placeholder: "line1, line2" });
  const ignoreWindows = h("input", { type: "checkbox", name: "ignore_windows" });
  const windowNote = h("p", { class: "muted", "aria-live": "polite" });
  const showWindows = () => {
    const tags = targetKind.value === "tags" ? targetValues.value.split(",").map((s) => s.trim()) : [];
    const relevant = windows.filter((w) => targetKind.value === "all" || tags.includes(w.tag));
    windowNote.textContent = relevant.length
      ? "Maintenance windows: " + relevant.map((w) => `${w.tag}: ${w.windows.map((x) => `${x.spec} (${x.open_now ? "open now" : `next ${x.next_open || "never"}`})`).join("; ")}`).join(" | ")
      : "No maintenance windows on these targets: waves are sent at once.";
  };
  targetKind.addEventListener("change", showWindows);
  targetValues.addEventListener("input", showWindows);
  showWindows();
  const waves = h("div", { class: "waves" });
  const presets = WAVE_DEFAULTS.map((w) => ({ ...w }));
  const drawWaves = () => waves.replaceChildren(
    ...presets.map((p, i) => waveRow(i, p, presets.length > 1 ? () => { presets.splice(i, 1); drawWaves(); } : null)),
  );
  drawWaves();
  const gate = h("fieldset", { class: "gate" }, h("legend", {}, "Quality gate of every wave (blank: check off)"),
    GATE_FIELDS.map(([name, label, value, step]) =>
      field(`gate-${name}`, label, h("input", { id: `gate-${name}`, name, type: "number", min: "0", step, value }))));
  const submit = h("button", { type: "submit", disabled: !allowed, "aria-describedby": allowed ? null : "create-why" }, "Create rollout");
  const form = h("form", { class: "create", "aria-labelledby": "create-title" },
    h("h2", { id: "create-title" }, "New rollout"),
    allowed ? null : h("p", { id: "create-why", class: "why" }, `You can read this form but not send it: ${ctx.why("operator")}.`),
    field("new-bundle", "Bundle", bundle),
    field("new-previous", "Roll back to", previous, "what a failed wave re-assigns"),
    field("new-target-kind", "Target", targetKind),
    field("new-target", "Tags or device ids", targetValues, "comma-separated"),
    windowNote,
    h("label", { class: "check" }, ignoreWindows, " ignore maintenance windows (an emergency; recorded)"),
    waves,
    h("button", { type: "button", onclick: () => { presets.push({ kind: "percent", value: "100" }); drawWaves(); } }, "Add a wave"),
    gate, submit, error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const thresholds = {};
    for (const [name] of GATE_FIELDS) {
      const v = form.querySelector(`[name="${name}"]`).value.trim();
      thresholds[name] = v === "" ? null : Number(v);
    }
    if (thresholds.min_samples === null) delete thresholds.min_samples;
    const kind = targetKind.value;
    const body = {
      bundle_sha256: bundle.value,
      target: { kind, values: kind === "all" ? [] : targetValues.value.split(",").map((s) => s.trim()).filter(Boolean) },
      waves: [...waves.querySelectorAll("fieldset.wave")].map((f) => readWave(f, thresholds)),
      ignore_windows: ignoreWindows.checked,
    };
    if (previous.value && previous.value !== bundle.value) body.previous_sha256 = previous.value;
    submit.disabled = true;
    try {
      const made = await ctx.send("POST", "/rollouts", body);
      ctx.say(`Rollout ${made.id} created.`);
      ctx.go(`#/rollouts/${made.id}`);
    } catch (err) {
      error.textContent = `Not created: ${err.message}`;
    } finally {
      submit.disabled = !allowed;
    }
  });
  return form;
}

export function rolloutsPage(ctx) {
  const list = h("div", {});
  const formArea = h("div", {});
  const node = h("div", {}, h("h1", {}, "Rollouts"), list, formArea);
  let names = {};

  return {
    title: "Rollouts",
    pollMs: 3000,
    async refresh() {
      if (formArea.childElementCount === 0) {
        const [bundles, windows, fleet] = await Promise.all([
          ctx.get("/bundles"), ctx.get("/windows"), ctx.get("/console/api/fleet"),
        ]);
        names = Object.fromEntries(bundles.data.map((b) => [b.sha256, `${b.name} ${b.version}`]));
        formArea.append(createForm(ctx, bundles.data, windows.data, fleet.data));
      }
      const { data } = await ctx.get("/rollouts");
      const now = Date.now() / 1000;
      swap(
        list,
        data.length === 0
          ? h("p", {}, "No rollout yet.")
          : table(
              "Every rollout, newest first",
              ["Rollout", "Bundle", "Target", "Status", "Why it stopped", "Created", "Last change"],
              data.slice().reverse().map((r) => [
                link(`#/rollouts/${r.id}`, `rollout ${r.id}`, `r-${r.id}`),
                names[r.bundle_sha256] || short(r.bundle_sha256),
                r.target.all ? "every device" : r.target.tags ? `tags ${r.target.tags.join(", ")}` : `devices ${r.target.devices.join(", ")}`,
                badge(r.status),
                r.reason || "–",
                timeEl(r.created_at, now),
                timeEl(r.updated_at, now),
              ]),
              { class: "rollouts" },
            ),
      );
    },
    node,
  };
}
