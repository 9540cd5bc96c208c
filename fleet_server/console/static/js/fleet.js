// Fleet overview: every device with link, update phase, version, last seen, health and the
// model's field figures; filters by tag and version; counts by version.

import { badge, h, link, ms, pct, swap, timeEl } from "./dom.js";

const PAGE = 250;

export function fleetPage(ctx) {
  const state = { tag: "", version: "", search: "", shown: PAGE, data: null };
  const counts = h("section", { "aria-labelledby": "by-version" });
  const results = h("div", { class: "results" });
  const tagSelect = h("select", { id: "filter-tag", name: "tag" });
  const versionSelect = h("select", { id: "filter-version", name: "version" });
  const search = h("input", { id: "filter-id", type: "search", name: "id", autocomplete: "off" });

  const rerender = () => state.data && draw();
  tagSelect.addEventListener("change", () => { state.tag = tagSelect.value; state.shown = PAGE; rerender(); });
  versionSelect.addEventListener("change", () => {
    state.version = versionSelect.value;
    state.shown = PAGE;
    rerender();
  });
  search.addEventListener("input", () => { state.search = search.value.trim(); rerender(); });

  const node = h(
    "div",
    {},
    h("h1", {}, "Fleet"),
    counts,
    h(
      "form",
      { class: "filters", role: "search", "aria-label": "Filter devices", onsubmit: (e) => e.preventDefault() },
      h("label", { for: "filter-tag" }, "Tag"),
      tagSelect,
      h("label", { for: "filter-version" }, "Version"),
      versionSelect,
      h("label", { for: "filter-id" }, "Device id"),
      search,
    ),
    results,
  );

  function options(select, values, current, allLabel) {
    const wanted = ["", ...values];
    const have = [...select.options].map((o) => o.value);
    if (wanted.join("\n") === have.join("\n")) return;
    select.replaceChildren(
      ...wanted.map((v) => h("option", { value: v, selected: v === current }, v || allLabel)),
    );
  }

  function draw() {
    const data = state.data;
    options(tagSelect, data.tags, state.tag, "every tag");
    options(versionSelect, Object.keys(data.by_version), state.version, "every version");
    const total = data.devices.length;
    const online = data.devices.filter((d) => d.availability === "online").length;
    swap(
      counts,
      h(
        "div",
        {},
        h("h2", { id: "by-version" }, "Devices by version"),
        h(
          "ul",
          { class: "chips" },
          Object.entries(data.by_version).map(([version, n]) =>
            h(
              "li",
              {},
              h(
                "button",
                {
                  type: "button",
                  "data-key": `v-${version}`,
                  "aria-pressed": String(state.version === version),
                  onclick: () => {
                    state.version = state.version === version ? "" : version;
                    versionSelect.value = state.version;
                    state.shown = PAGE;
                    draw();
                  },
                },
                h("strong", {}, version),
                ` ${n} device${n === 1 ? "" : "s"}`,
              ),
            ),
          ),
        ),
        h("p", {}, `${total} devices, ${online} online, ${total - online} not.`),
      ),
    );
    const wanted = data.devices.filter(
      (d) =>
        (!state.tag || d.tags.includes(state.tag)) &&
        (!state.version || (d.version || "none") === state.version) &&
        (!state.search || d.id.includes(state.search)),
    );
    const rows = wanted.slice(0, state.shown).map((d) => {
      const f = d.figures;
      return h(
        "tr",
        {},
        h("th", { scope: "row" }, link(`#/devices/${encodeURIComponent(d.id)}`, d.id)),
        h("td", {}, d.tags.join(", ")),
        h("td", {}, badge(d.availability)),
        h("td", {}, d.phase || "–"),
        h("td", {}, d.version || "none", d.pinned ? h("span", { class: "muted" }, " (pinned)") : null),
        h("td", {}, timeEl(d.last_seen, data.now)),
        h("td", {}, badge(d.health, d.health_reason), h("span", { class: "sr-only" }, `: ${d.health_reason}`)),
        h("td", { class: "n" }, ms(f?.latency_p95_ms)),
        h("td", { class: "n" }, pct(f?.mean_confidence)),
        h("td", { class: "n" }, pct(f?.uncertain_rate)),
      );
    });
    const more = wanted.length > state.shown
      ? h(
          "button",
          { type: "button", onclick: () => { state.shown += PAGE; draw(); } },
          `Show ${Math.min(PAGE, wanted.length - state.shown)} more (${wanted.length - state.shown} not shown)`,
        )
      : null;
    swap(
      results,
      h(
        "div",
        {},
        h(
          "table",
          { class: "devices" },
          h("caption", {}, `${wanted.length} of ${total} devices`),
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              ["Device", "Tags", "Link", "Update phase", "Version", "Last seen", "Health",
                "p95 latency", "Mean confidence", "Uncertain"].map((x) => h("th", { scope: "col" }, x)),
            ),
          ),
          h("tbody", {}, rows),
        ),
        more,
        h(
          "p",
          { class: "muted" },
          "p95 latency and mean confidence are each device's own recent figures; the uncertain share counts since the device started.",
        ),
      ),
    );
  }

  return {
    title: "Fleet",
    pollMs: 3000,
    async refresh() {
      const { data, changed } = await ctx.get("/console/api/fleet");
      if (changed || state.data === null) {
        state.data = data;
        draw();
      }
    },
    node,
  };
}
