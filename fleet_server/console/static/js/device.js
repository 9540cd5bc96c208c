// One device: its state and health, pin/unpin, telemetry charts, the versions it ran (when and
// why each ended), its rollouts and its update events with their reasons.

import { badge, facts, h, link, ms, num, pct, short, swap, table, timeEl, when } from "./dom.js";
import { lineChart, shareBars } from "./charts.js";

const UPDATE_KINDS = new Set([
  "device-event", "device-refused", "device-status", "assignment", "assignment-cleared",
  "device-pinned", "device-provisioned", "device-registered",
]);

export function devicePage(ctx, deviceId) {
  const state = { data: null, links: false };
  const body = h("div", {});
  const pinError = h("p", { class: "error", role: "alert" });
  const pinArea = h("section", { "aria-label": "Pin" });
  const node = h("div", {}, h("h1", {}, `Device ${deviceId}`), pinArea, body);
  let unpin = null;

  const name = (sha) => (state.data && state.data.bundles[sha]) || short(sha) || "none";

  async function pin(sha) {
    pinError.textContent = "";
    try {
      await ctx.send("PUT", `/devices/${encodeURIComponent(deviceId)}/pin`, { sha256: sha });
      ctx.say(sha ? `Pinned ${deviceId} to ${name(sha)}.` : `Unpinned ${deviceId}.`);
      await refresh();
    } catch (err) {
      pinError.textContent = err.message;
    }
  }

  function pinForm(d) {
    const allowed = ctx.may("operator");
    const select = h(
      "select",
      { id: "pin-bundle", name: "bundle", disabled: !allowed },
      Object.entries(state.data.bundles).map(([sha, label]) =>
        h("option", { value: sha, selected: sha === (d.pinned_bundle || d.active_bundle) }, label),
      ),
    );
    return h(
      "form",
      {
        class: "inline",
        "aria-label": "Pin",
        onsubmit: (e) => { e.preventDefault(); pin(select.value); },
      },
      h("label", { for: "pin-bundle" }, "Keep on bundle"),
      select,
      h("button", { type: "submit", disabled: !allowed, "aria-describedby": allowed ? null : "pin-why" }, "Pin"),
      (unpin = h(
        "button",
        { type: "button", disabled: !allowed || !d.pinned_bundle, onclick: () => pin(null) },
        "Unpin",
      )),
      allowed ? null : h("span", { id: "pin-why", class: "why" }, ctx.why("operator")),
      pinError,
    );
  }

  function draw() {
    const data = state.data;
    const d = data.device;
    const f = data.figures;
    const events = data.events
      .filter((e) => state.links || UPDATE_KINDS.has(e.kind))
      .slice()
      .reverse();
    const series = (p) => p.bundle || "unknown";
    if (pinArea.childElementCount === 0) pinArea.append(pinForm(d));
    unpin.disabled = !ctx.may("operator") || !d.pinned_bundle;
    const labels = [...new Set(Object.values(data.class_shares).flatMap((s) => Object.keys(s)))].sort();
    swap(
      body,
      h(
        "div",
        {},
        h(
          "section",
          { "aria-labelledby": "state" },
          h("h2", { id: "state" }, "State"),
          facts([
            ["Health", [badge(data.health.status), " ", data.health.reason]],
            ["Link", badge(d.availability)],
            ["Update phase", d.phase || "not reported"],
            ["Runs", d.active_bundle ? `${name(d.active_bundle)} (${short(d.active_bundle)})` : "no bundle"],
            ["Last good bundle", d.last_good_bundle ? name(d.last_good_bundle) : "–"],
            ["Pinned", d.pinned_bundle ? name(d.pinned_bundle) : "no"],
            ["Tags", d.tags.join(", ") || "none"],
            ["Last seen", timeEl(d.last_seen, data.now)],
            ["Last event's reason", d.last_event_reason || "–"],
            ["Runtime", d.runtime_version || "–"],
            ["Clock skew", d.clock_skew_s === null ? "–" : `${num(d.clock_skew_s, 2)} s`],
            ["p95 latency (newest)", ms(f?.latency_p95_ms)],
            ["Mean confidence (newest)", pct(f?.mean_confidence)],
            ["Uncertain since start", pct(f?.uncertain_rate)],
          ]),
        ),
        h(
          "section",
          { "aria-labelledby": "charts" },
          h("h2", { id: "charts" }, "Telemetry"),
          h(
            "div",
            { class: "charts" },
            lineChart({ title: "Model latency p95 (ms)", points: data.series, field: "latency_p95_ms", series, names: name, format: (v) => ms(v) }),
            lineChart({ title: "Mean confidence", points: data.series, field: "mean_confidence", series, names: name, format: (v) => pct(v) }),
            lineChart({ title: "Uncertain share between snapshots", points: data.series, field: "uncertain_rate", series, names: name, format: (v) => pct(v) }),
            shareBars({ title: "Class distribution per version", groups: data.class_shares, names: name, labels }),
          ),
        ),
        h(
          "section",
          { "aria-labelledby": "runs" },
          h("h2", { id: "runs" }, "Versions it ran"),
          table(
            "Each bundle the device served, oldest first",
            ["Bundle", "From", "Until", "Why it ended", "Rollout"],
            data.runs.map((r) => [
              name(r.bundle),
              r.started_at ? when(r.started_at) : "before this server's records",
              r.ended_at ? when(r.ended_at) : h("strong", {}, "still running"),
              r.ended_because || "–",
              r.rollout_id ? link(`#/rollouts/${r.rollout_id}`, `rollout ${r.rollout_id}`) : "–",
            ]),
          ),
        ),
        h(
          "section",
          { "aria-labelledby": "rollouts" },
          h("h2", { id: "rollouts" }, "Rollouts"),
          data.rollouts.length === 0
            ? h("p", {}, "No rollout has covered this device.")
            : table(
                "The rollouts that covered this device",
                ["Rollout", "Bundle", "Wave", "Device outcome", "Reason", "Rollout status"],
                data.rollouts.map((r) => [
                  link(`#/rollouts/${r.rollout_id}`, `rollout ${r.rollout_id}`),
                  name(r.bundle),
                  `wave ${r.wave}`,
                  badge(r.status),
                  r.reason || "–",
                  badge(r.rollout_status),
                ]),
              ),
        ),
        h(
          "section",
          { "aria-labelledby": "events" },
          h("h2", { id: "events" }, "Update events"),
          h(
            "label",
            { class: "check" },
            h("input", {
              type: "checkbox",
              checked: state.links,
              "data-key": "show-links",
              onchange: (e) => { state.links = e.target.checked; draw(); },
            }),
            " also show link changes (online/offline)",
          ),
          h(
            "ol",
            { class: "events", reversed: true },
            events.map((e) =>
              h(
                "li",
                { class: `k-${e.kind}` },
                timeEl(e.at, data.now, false),
                " ",
                h("span", { class: "kind" }, e.kind.replace("device-", "")),
                " ",
                e.message,
                e.rollout_id ? [" (", link(`#/rollouts/${e.rollout_id}`, `rollout ${e.rollout_id}`), ")"] : null,
              ),
            ),
          ),
        ),
      ),
    );
  }

  async function refresh() {
    const { data, changed } = await ctx.get(`/console/api/devices/${encodeURIComponent(deviceId)}`);
    if (changed || state.data === null) {
      state.data = data;
      draw();
    }
  }

  return { title: `Device ${deviceId}`, refresh, node };
}
