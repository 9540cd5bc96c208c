// Field data: the frames the devices uploaded (newest first), filtered by device, camera, reason
// and label status, a page at a time (Newer / Older); an operator confirms the device's answer or
// picks another of the bundle's labels (PUT /field-data/samples/{sha256}/label, as
// `edgefleet fleet field-data label`).

import { dataUrl } from "./api.js";
import { badge, h, pct, short, swap, timeEl } from "./dom.js";

const PAGE_SIZES = [10, 25, 50, 100];
const DEFAULT_PAGE_SIZE = 50;
const REASONS = ["low-confidence", "class", "random", "shadow-disagreement"];

export function fieldDataPage(ctx) {
  const state = { device: "", camera: "", reason: "", labelled: "", per: DEFAULT_PAGE_SIZE, offset: 0, seen: null };
  const images = new Map(); // sha256 -> data: URL (or null while loading / on failure)
  const labels = new Map(); // bundle sha256 -> a promise of its labels (null: not in the registry)
  const results = h("div", { class: "results" });
  const device = h("input", { id: "field-device", type: "search", name: "device", autocomplete: "off" });
  const camera = h("input", { id: "field-camera", type: "search", name: "camera", autocomplete: "off" });
  const reason = h(
    "select",
    { id: "field-reason", name: "reason" },
    h("option", { value: "" }, "every reason"),
    REASONS.map((r) => h("option", { value: r }, r)),
  );
  const labelled = h(
    "select",
    { id: "field-labelled", name: "labelled" },
    h("option", { value: "" }, "labelled or not"),
    h("option", { value: "false" }, "unlabelled"),
    h("option", { value: "true" }, "labelled"),
  );
  const per = h(
    "select",
    { id: "field-per", name: "per" },
    PAGE_SIZES.map((n) => h("option", { value: String(n), selected: n === DEFAULT_PAGE_SIZE }, String(n))),
  );
  const pager = h("nav", { class: "pager", "aria-label": "Sample pages" });
  const allowed = ctx.may("operator");
  let asked = 0;

  function changed() {
    state.device = device.value.trim();
    state.camera = camera.value.trim();
    state.reason = reason.value;
    state.labelled = labelled.value;
    state.per = Number(per.value);
    state.offset = 0; // new filters: back to the newest
    reload();
  }
  function reload() {
    state.seen = null;
    page.refresh().catch((err) => ctx.say(`Could not load: ${err.message}`));
  }
  function turn(by) {
    state.offset = Math.max(0, state.offset + by * state.per);
    reload();
  }
  for (const input of [device, camera]) input.addEventListener("change", changed);
  for (const select of [reason, labelled, per]) select.addEventListener("change", changed);

  const node = h(
    "div",
    {},
    h("h1", {}, "Field data"),
    h(
      "p",
      { class: "muted" },
      "Frames the devices kept for retraining (collection is switched on per group with ",
      h("code", {}, "edgefleet fleet field-data enable"),
      "). Confirm the device's answer or correct it; ",
      h("code", {}, "edgefleet fleet field-data export"),
      " writes the labelled ones as a parity set.",
    ),
    h(
      "form",
      { class: "filters", role: "search", "aria-label": "Filter samples", onsubmit: (e) => { e.preventDefault(); changed(); } },
      h("label", { for: "field-device" }, "Device"),
      device,
      h("label", { for: "field-camera" }, "Camera"),
      camera,
      h("label", { for: "field-reason" }, "Reason"),
      reason,
      h("label", { for: "field-labelled" }, "Label"),
      labelled,
      h("label", { for: "field-per" }, "Per page"),
      per,
    ),
    allowed ? null : h("p", { id: "label-why", class: "why" }, `Labelling disabled: ${ctx.why("operator")}.`),
    results,
    pager,
  );

  function query() {
    // one more than a page: whether an older page exists
    const q = new URLSearchParams({ limit: String(state.per + 1), offset: String(state.offset) });
    if (state.device) q.set("device", state.device);
    if (state.camera) q.set("camera", state.camera);
    if (state.reason) q.set("reason", state.reason);
    if (state.labelled) q.set("labelled", state.labelled);
    return `/field-data/samples?${q}`;
  }

  async function bundleLabels(sample) {
    // one read per bundle (a promise shared by its samples); a bundle the registry lacks
    // offers the device's top-k answers
    if (!labels.has(sample.bundle_sha256)) {
      labels.set(
        sample.bundle_sha256,
        ctx.get(`/console/api/bundles/${sample.bundle_sha256}`).then(({ data }) => data.labels, () => null),
      );
    }
    return (await labels.get(sample.bundle_sha256)) ?? sample.top_k.map((t) => t.label);
  }

  function thumbnail(sample) {
    const img = h("img", { class: "thumb", alt: `frame ${short(sample.sha256)} from ${sample.device_id}`, width: 96 });
    const known = images.get(sample.sha256);
    if (known) img.src = known;
    else if (known === undefined) {
      images.set(sample.sha256, null);
      dataUrl(`/field-data/samples/${sample.sha256}/image`)
        .then((url) => {
          images.set(sample.sha256, url);
          for (const el of results.querySelectorAll(`img[data-sha="${sample.sha256}"]`)) el.src = url;
        })
        .catch(() => images.delete(sample.sha256));
    }
    img.setAttribute("data-sha", sample.sha256);
    return img;
  }

  async function label(sample, chosen) {
    try {
      const reply = await ctx.send("PUT", `/field-data/samples/${sample.sha256}/label`, { label: chosen });
      const verb = chosen === sample.label ? "confirmed" : `corrected from ${sample.label}`;
      ctx.say(`${short(sample.sha256)}: ${reply.true_label} (${verb})`);
      state.seen = null;
      await page.refresh();
    } catch (err) {
      ctx.say(`Could not label ${short(sample.sha256)}: ${err.message}`);
    }
  }

  function status(s) {
    if (!s.true_label) return badge("unlabelled");
    const verb = s.true_label === s.label ? "confirmed" : "corrected";
    return h("span", {}, badge(verb), " ", h("strong", {}, s.true_label), h("span", { class: "muted" }, ` by ${s.labelled_by} `), timeEl(s.labelled_at));
  }

  function actions(s, classes) {
    const key = short(s.sha256);
    const common = { disabled: !allowed, title: allowed ? null : ctx.why("operator"), "aria-describedby": allowed ? null : "label-why" };
    const pick = h(
      "select",
      { id: `pick-${key}`, "data-key": `pick-${key}`, "aria-label": `Class for ${key}`, ...common },
      classes.map((c) => h("option", { value: c, selected: c === (s.true_label ?? s.label) }, c)),
    );
    return h(
      "div",
      { class: "buttons" },
      h("button", { type: "button", "data-key": `confirm-${key}`, ...common, onclick: () => label(s, s.label) }, `Confirm ${s.label}`),
      pick,
      h("button", { type: "button", "data-key": `correct-${key}`, ...common, onclick: () => label(s, pick.value) }, "Set label"),
    );
  }

  function drawPager(shown, more) {
    const first = state.offset + 1;
    const last = state.offset + shown;
    swap(
      pager,
      h(
        "div",
        { class: "buttons" },
        h("button", { type: "button", id: "field-newer", disabled: state.offset === 0, onclick: () => turn(-1) }, "Newer"),
        h("span", { id: "field-range", class: "muted" }, shown ? `samples ${first} to ${last}` : ""),
        h("button", { type: "button", id: "field-older", disabled: !more, onclick: () => turn(1) }, "Older"),
      ),
    );
  }

  function draw(samples, classes, more) {
    drawPager(samples.length, more);
    if (samples.length === 0) {
      const why = state.offset > 0 ? "No older sample matches." : "No sample matches (or no device collects yet).";
      swap(results, h("p", { class: "muted" }, why));
      return;
    }
    const rows = [];
    for (const [i, s] of samples.entries()) {
      rows.push(
        h(
          "tr",
          { "data-sample": s.sha256 },
          h("td", {}, thumbnail(s)),
          h("td", {}, timeEl(s.received_at), h("br"), h("code", { title: s.sha256 }, short(s.sha256))),
          h("td", {}, s.device_id),
          h("td", {}, s.camera_id ?? h("span", { class: "muted" }, "–")),
          h("td", {}, s.reason),
          h("td", {}, `${s.label} (${pct(s.confidence)})`),
          h("td", {}, `${s.bundle_name} ${s.bundle_version}`),
          h("td", { class: "label-status" }, status(s)),
          h("td", {}, actions(s, classes[i])),
        ),
      );
    }
    const headers = ["Frame", "Received", "Device", "Camera", "Reason", "Device's answer", "Bundle", "Label", "Confirm or correct"];
    swap(
      results,
      h(
        "table",
        { class: "samples" },
        h("caption", {}, `Samples ${state.offset + 1} to ${state.offset + samples.length}, newest first`),
        h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
        h("tbody", {}, rows),
      ),
    );
  }

  const page = {
    title: "Field data",
    pollMs: 5000,
    async refresh() {
      const mine = ++asked; // a filter changed mid-poll: only the newest read is drawn
      const { data } = await ctx.get(query());
      const more = data.length > state.per;
      const shown = data.slice(0, state.per);
      const classes = await Promise.all(shown.map(bundleLabels));
      const text = JSON.stringify([state.offset, data]);
      if (mine !== asked || text === state.seen) return;
      state.seen = text;
      draw(shown, classes, more);
    },
    node,
  };
  return page;
}
