// One rollout, live: status and commands, waves filling device by device, each gate verdict
// with the measured figure beside its threshold, a shadow wave's figures per device, and the
// timeline as readable events.

import { badge, facts, h, link, num, short, swap, when } from "./dom.js";

const LIVE = new Set(["pending", "running", "paused", "awaiting-approval"]);
const COMMANDS = [
  ["pause", "Pause", (s) => s === "running" || s === "awaiting-approval", "only a running rollout pauses"],
  ["resume", "Resume", (s) => s === "paused", "only a paused rollout resumes"],
  ["approve", "Approve next wave", (s) => s === "awaiting-approval", "no wave awaits approval"],
  ["abort", "Abort and roll back", (s) => LIVE.has(s), "the rollout has ended"],
];
const x = (v) => (v === null || v === undefined ? "–" : `${num(v, 3)}x`);
const msv = (v) => (v === null || v === undefined ? "–" : `${num(v, 3)} ms`);
const pts = (v) => (v === null || v === undefined ? "–" : `${num(100 * v, 1)} points`);
const share = (v) => (v === null || v === undefined ? "–" : `${num(100 * v, 2)}%`);
const plain = (v) => num(v, 4);
// each check: how people call it, and how its measured value/limit and its reference read
const CHECKS = {
  latency_p95_vs_previous: ["Latency p95 against the previous version", x, msv],
  latency_p95_vs_budget: ["Latency p95 against the bundle's budget", msv, msv],
  error_rate: ["Inference error rate", share, plain],
  confidence_drop_vs_previous: ["Mean confidence drop from the previous version", pts, share],
  confidence_drop_vs_baseline: ["Mean confidence drop from the quality report", pts, share],
  class_shift_vs_previous: ["Class shift from the previous version (JS divergence)", plain, plain],
  class_shift_vs_baseline: ["Class shift from the quality report (JS divergence)", plain, plain],
  // a shadow wave's checks (docs/shadow.md)
  agreement: ["Agreement with the active model", share, plain],
  "camera-agreement": ["Agreement on the camera that agrees least", share, plain],
  "class-shift": ["Largest move of a class's share of the answers", pts, plain],
  "camera-class-shift": ["Largest move of a class's share on one camera", pts, plain],
  errors: ["Candidate's error rate", share, plain],
  "latency-ratio": ["Candidate's time a frame against the active model's", x, plain],
  "latency-p95": ["Candidate's p95 time a frame", msv, plain],
  "latency-budget": ["Candidate's p95 against its latency budget", msv, plain],
  frames: ["Frames compared so far", plain, plain],
};
const EVENT_WORDS = {
  "rollout-created": "created", started: "started", "wave-created": "wave planned",
  "wave-started": "wave sent", "wave-status": "wave", "device-status": "device",
  "device-committed": "committed", "device-failed": "failed", "device-timed-out": "timed out",
  "device-event": "device reports", "device-refused": "device refused", "wave-settled": "settled",
  "gate-undecided": "gate waits", "wave-passed": "gate passed", "wave-failed": "gate failed",
  "rollout-status": "status", aborted: "aborted", "rollback-complete": "rolled back",
  completed: "completed", paused: "paused", resumed: "resumed", approved: "approved",
  "awaiting-approval": "awaits approval", "window-waiting": "window", "window-opened": "window",
  "shadow-started": "shadow started",
};

export function rolloutPage(ctx, rolloutId) {
  const state = { data: null, timeline: [], lastId: null, shadow: null };
  const head = h("div", {});
  const actions = h("div", {});
  const wavesArea = h("div", {});
  const events = h("ol", { class: "timeline", "aria-live": "off" });
  const error = h("p", { class: "error", role: "alert" });
  const reason = h("input", { id: "abort-reason", name: "reason", value: "operator abort", maxlength: "1024" });
  const node = h(
    "div",
    {},
    h("h1", {}, `Rollout ${rolloutId}`),
    head,
    actions,
    wavesArea,
    h("section", { "aria-labelledby": "tl" }, h("h2", { id: "tl" }, "Timeline"), events),
  );
  const name = (sha) => (state.data && state.data.bundles[sha]) || short(sha);

  async function command(verb) {
    error.textContent = "";
    try {
      const body = verb === "abort" ? { reason: reason.value.trim() || "operator abort" } : undefined;
      await ctx.send("POST", `/rollouts/${rolloutId}/${verb}`, body);
      ctx.say(`Rollout ${rolloutId}: ${verb} sent.`);
      await refresh();
    } catch (err) {
      error.textContent = `${verb} refused: ${err.message}`;
    }
  }

  function drawActions(status) {
    const allowed = ctx.may("operator");
    const buttons = COMMANDS.map(([verb, label, possible, why]) => {
      const usable = allowed && possible(status);
      const title = !allowed ? ctx.why("operator") : possible(status) ? null : why;
      return h("button", {
        type: "button", "data-key": `cmd-${verb}`, disabled: !usable, title,
        "aria-describedby": allowed ? null : "cmd-why", onclick: () => command(verb),
      }, label);
    });
    if (actions.childElementCount === 0) {
      actions.append(h("section", { "aria-labelledby": "cmds" },
        h("h2", { id: "cmds" }, "Commands"),
        h("div", { class: "field" }, h("label", { for: "abort-reason" }, "Reason for an abort"), reason),
        h("div", { class: "buttons" }), allowed ? null : h("p", { id: "cmd-why", class: "why" }, `Commands disabled: ${ctx.why("operator")}.`),
        error));
    }
    reason.disabled = !allowed || !LIVE.has(status);
    swap(actions.querySelector(".buttons"), h("div", { class: "row" }, buttons));
  }

  function selector(spec) {
    if (spec.count !== null && spec.count !== undefined) return `${spec.count} device${spec.count === 1 ? "" : "s"}`;
    if (spec.percent !== null && spec.percent !== undefined) return `${spec.percent}% of the targets`;
    if (spec.tags && spec.tags.length) return `tags ${spec.tags.join(", ")}`;
    return `devices ${spec.devices.join(", ")}`;
  }

  function verdict(v, gate, status) {
    if (!v) {
      const ended = ["failed", "aborted", "skipped"].includes(status);
      return h("p", { class: "muted" }, ended
        ? "No gate verdict: the wave ended before its quality gate ran."
        : "The quality gate has not judged this wave yet.");
    }
    return h("div", { class: "verdict" },
      h("p", {}, "Gate verdict: ", badge(v.outcome), " ", v.reason),
      v.checks.length === 0 ? null : h("table", { class: "checks" },
        h("caption", {}, "Each check: the figure measured on the new bundle beside its limit"),
        h("thead", {}, h("tr", {}, ["Check", "Result", "Measured", "Limit", "Reference", "Why"].map((x) => h("th", { scope: "col" }, x)))),
        h("tbody", {}, v.checks.map((c) => {
          const [label, value, reference] = CHECKS[c.name] || [c.name, plain, plain];
          return h("tr", { class: `c-${c.status}` },
          h("th", { scope: "row" }, label),
          h("td", {}, badge(c.status)),
          h("td", { class: "n" }, value(c.measured)),
          h("td", { class: "n" }, value(c.limit)),
          h("td", { class: "n" }, reference(c.reference)),
          h("td", {}, c.reason.replace(/^wave \d+: /, "")));
        }))),
      gate ? h("p", { class: "muted" }, `Needs ${gate.min_samples} predictions before a check decides.`) : null);
  }

  // a shadow wave: what its devices reported, per device and in all (GET /rollouts/{id}/shadow)
  function shadowFigures(w) {
    const s = state.shadow;
    const stage = w.spec.shadow;
    const intro = h("p", {}, `${selector(w.spec)} run the bundle beside their active model, every ${stage.every_nth} frames, ` +
      `at most ${Math.round(100 * stage.cpu_budget)}% of a core; judged after ${stage.min_frames} frames and ${stage.min_duration_s} s ` +
      `(agreement at least ${share(stage.min_agreement)}, no class's share moving more than ${pts(stage.max_class_shift)}). ` +
      "Its answers never reach the sorter.");
    if (!s) return [intro, h("p", { class: "muted" }, "No figures yet.")];
    const pct = (v) => (v === null || v === undefined ? "–" : `${num(100 * v, 1)}%`);
    const row = (name, f, head) => h("tr", head ? { class: "total" } : {},
      h("th", { scope: "row" }, name),
      h("td", { class: "n" }, String(f.compared)),
      h("td", { class: "n" }, pct(f.agreement)),
      h("td", { class: "n" }, `${pct(f.candidate_confidence)} / ${pct(f.active_confidence)}`),
      h("td", {}, f.largest_class_shift ? `${f.largest_class_shift.class} ${num(100 * f.largest_class_shift.by, 1)} points` : "–"),
      h("td", { class: "n" }, `${msv(f.candidate_ms)} / ${msv(f.active_ms)}`),
      h("td", { class: "n" }, String(f.skipped)),
      h("td", {}, String(f.errors) + (Object.keys(f.failures || {}).length ? `: ${Object.values(f.failures)[0]}` : "")));
    return [intro, h("table", { class: "checks", "data-key": "shadow-figures" },
      h("caption", {}, "What the candidate did beside the active model, on the same frames"),
      h("thead", {}, h("tr", {}, ["Device", "Frames compared", "Agreement", "Confidence (candidate / active)", "Largest class shift", "Time a frame (candidate / active)", "Skipped", "Errors"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, Object.entries(s.per_device).map(([device, f]) => row(device, f, false)), row("all", s.figures, true)))];
  }

  function drawWaves(d) {
    swap(wavesArea, h("section", { "aria-labelledby": "waves" },
      h("h2", { id: "waves" }, "Waves"),
      d.waves.length === 0 ? h("p", {}, "The planner has not saved this rollout's waves yet.") : null,
      d.waves.map((w) => {
        if (w.spec.shadow) {
          return h("article", { class: `wave w-${w.status}`, "aria-labelledby": `wave-${w.index}` },
            h("h3", { id: `wave-${w.index}` }, `Wave ${w.index} (shadow) `, badge(w.status)),
            w.reason ? h("p", { class: "reason" }, w.reason) : null,
            shadowFigures(w),
            verdict(w.verdict, null, w.status));
        }
        const canary = w.index === 1 || (w.index === 2 && d.waves[0].spec.shadow);
        const done = w.devices.filter((x) => x.status === "committed").length;
        return h("article", { class: `wave w-${w.status}`, "aria-labelledby": `wave-${w.index}` },
          h("h3", { id: `wave-${w.index}` }, `Wave ${w.index}${canary ? " (canary)" : ""} `, badge(w.status)),
          h("p", {}, `${selector(w.spec)}; ${done} of ${w.devices.length} committed (needs ${Math.round(100 * w.spec.success_threshold)}%); ` +
            `device timeout ${w.spec.device_timeout_s} s, health window ${w.spec.health_window_s} s` +
            (w.spec.approval_before_next ? "; the next wave waits for approval" : "")),
          w.reason ? h("p", { class: "reason" }, w.reason) : null,
          h("ul", { class: "cells", "aria-label": `Devices of wave ${w.index}` }, w.devices.map((x) =>
            h("li", { class: `cell s-${x.status}` },
              link(`#/devices/${encodeURIComponent(x.id)}`, x.id, `dev-${x.id}`),
              " ", h("span", { class: "st" }, x.status),
              x.reason ? h("span", { class: "why-cell" }, `: ${x.reason}`) : null))),
          verdict(w.verdict, w.spec.gate, w.status));
      })));
  }

  function drawHead(d) {
    const target = d.target.all ? "every device" : d.target.tags ? `devices with tags ${d.target.tags.join(", ")}` : `devices ${d.target.devices.join(", ")}`;
    swap(head, h("div", {},
      h("p", { class: "big" }, badge(d.status), " ", name(d.bundle),
        d.reason ? h("span", { class: "reason" }, ` — ${d.reason}`) : null),
      facts([
        ["Bundle", `${name(d.bundle)} (${short(d.bundle)})`],
        ["Rolls back to", d.previous ? name(d.previous) : "no previous bundle: assignments withdrawn"],
        ["Target", target],
        ["Created", when(d.created_at)],
        ["Current wave", d.current_wave ? `wave ${d.current_wave} of ${d.waves.length}` : "–"],
        ["Approvals", d.approved_by && d.approved_by.length ? d.approved_by.join(", ") : "none yet"],
        ["Skipped devices", Object.entries(d.skipped || {}).map(([k, v]) => `${k} (${v})`).join(", ") || "none"],
        d.ignore_windows ? ["Maintenance windows", "ignored"] : null,
      ])));
  }

  function drawTimeline(fresh) {
    const start = state.data ? state.data.created_at : 0;
    for (const t of fresh) {
      events.prepend(h("li", { class: `k-${t.kind}` },
        h("span", { class: "offset", title: when(t.at) }, `+${Math.max(0, Math.round(t.at - start))} s`), " ",
        h("span", { class: "kind" }, EVENT_WORDS[t.kind] || t.kind), " ",
        t.device_id ? [link(`#/devices/${encodeURIComponent(t.device_id)}`, t.device_id), ": "] : null,
        t.message));
    }
  }

  async function refresh() {
    const { data, changed } = await ctx.get(`/console/api/rollouts/${rolloutId}`);
    let shadowChanged = false;
    if (data.waves.length && data.waves[0].spec.shadow && (state.shadow === null || data.waves[0].status === "running")) {
      const { data: shadow } = await ctx.get(`/rollouts/${rolloutId}/shadow`);
      shadowChanged = JSON.stringify(shadow) !== JSON.stringify(state.shadow);
      state.shadow = shadow;
    }
    if (changed || shadowChanged || state.data === null) {
      state.data = data;
      drawHead(data);
      drawWaves(data);
    }
    drawActions(data.status);
    const query = state.lastId === null ? "limit=500" : `after_id=${state.lastId}&limit=500`;
    const { data: fresh } = await ctx.get(`/rollouts/${rolloutId}/timeline?${query}`);
    if (fresh.length) {
      state.lastId = fresh[fresh.length - 1].id;
      drawTimeline(fresh);
    }
  }

  return { title: `Rollout ${rolloutId}`, refresh, node, pollMs: 1500 };
}
