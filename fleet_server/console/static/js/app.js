// The console: login, hash routes, and one poll loop that refreshes the page on screen.
//
// Pages are modules exporting `page(ctx, ...params)` -> {title, node, refresh()}: `node` is
// mounted once, `refresh()` re-reads (ETag'd reads: a 304 changes nothing on screen) and is
// called every few seconds while the tab is visible.

import { get, send, setToken, token, whenUnauthorised, ApiError } from "./api.js";
import { h } from "./dom.js";
import { fleetPage } from "./fleet.js";
import { devicePage } from "./device.js";
import { bundlesPage } from "./bundles.js";
import { rolloutsPage } from "./rollouts.js";
import { rolloutPage } from "./rollout.js";
import { fieldDataPage } from "./fielddata.js";

const POLL_MS = 2000;
const ROLES = { viewer: 0, operator: 1, admin: 2 };

const routes = [
  [/^#\/fleet$/, fleetPage],
  [/^#\/devices\/([^/]+)$/, devicePage],
  [/^#\/bundles(?:\/([0-9a-f]{64}))?$/, bundlesPage],
  [/^#\/rollouts$/, rolloutsPage],
  [/^#\/rollouts\/(\d+)$/, rolloutPage],
  [/^#\/field-data$/, fieldDataPage],
];

const main = document.getElementById("main");
const statusLine = document.getElementById("status");
let current = null;
let timer = null;
let generation = 0;

/** What every page gets: who is logged in, and a helper for buttons their role may not use. */
const ctx = {
  me: null,
  may(role) {
    return this.me !== null && ROLES[this.me.role] >= ROLES[role];
  },
  why(role) {
    return this.me ? `needs the ${role} role; token '${this.me.name}' has ${this.me.role}` : "";
  },
  go(hash) {
    window.location.hash = hash;
  },
  send,
  get,
  say(message) {
    statusLine.textContent = message;
  },
};

function loginForm(message) {
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "current-password",
    required: true,
    spellcheck: "false",
  });
  const error = h("p", { class: "error", role: "alert" }, message || "");
  const form = h(
    "form",
    { class: "login", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "Log in to the fleet server"),
    h(
      "p",
      {},
      "Paste an API token (",
      h("code", {}, "edgefleet fleet tokens create NAME --role ROLE"),
      ", or the token the server was started with). It stays in this tab only.",
    ),
    h("label", { for: "token" }, "API token"),
    input,
    h("button", { type: "submit" }, "Log in"),
    error,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    setToken(input.value.trim());
    try {
      await whoAmI();
      if (!location.hash || location.hash === "#/login") location.hash = "#/fleet";
      else show();
    } catch (err) {
      setToken(null);
      error.textContent = err instanceof ApiError && err.status === 401
        ? "The server does not know this token (or it was revoked)."
        : err.message;
    }
  });
  return form;
}

async function whoAmI() {
  const { data } = await get("/console/api/me");
  ctx.me = data;
  document.getElementById("who").textContent = `${data.name} (${data.role})`;
  document.getElementById("logout").hidden = false;
}

function showLogin(message) {
  stop();
  ctx.me = null;
  document.getElementById("who").textContent = "";
  document.getElementById("logout").hidden = true;
  document.title = "Log in · edgefleet console";
  main.replaceChildren(loginForm(message));
  main.querySelector("input").focus();
}

function stop() {
  generation += 1;
  if (timer !== null) clearTimeout(timer);
  timer = null;
  current = null;
}

async function poll(mine) {
  if (mine !== generation || current === null) return;
  if (!document.hidden) {
    try {
      await current.refresh();
      if (mine === generation) ctx.say("");
    } catch (err) {
      if (mine === generation && !(err instanceof ApiError && err.status === 401)) {
        ctx.say(`Could not refresh: ${err.message}`);
      }
    }
  }
  if (mine === generation) timer = setTimeout(() => poll(mine), current?.pollMs ?? POLL_MS);
}

async function show() {
  if (!token()) return showLogin();
  if (ctx.me === null) {
    try {
      await whoAmI();
    } catch (err) {
      return showLogin(err.message);
    }
  }
  stop();
  const mine = generation;
  const hash = location.hash || "#/fleet";
  let made = null;
  for (const [pattern, page] of routes) {
    const match = hash.match(pattern);
    if (match) {
      made = page(ctx, ...match.slice(1).map((p) => (p === undefined ? p : decodeURIComponent(p))));
      break;
    }
  }
  if (made === null) {
    location.replace("#/fleet");
    return;
  }
  current = made;
  document.title = `${made.title} · edgefleet console`;
  for (const a of document.querySelectorAll("nav a")) {
    const here = hash.startsWith(`#/${a.dataset.page}`) ||
      (a.dataset.page === "fleet" && hash.startsWith("#/devices"));
    if (here) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  main.replaceChildren(made.node);
  main.focus({ preventScroll: true });
  try {
    await made.refresh();
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) ctx.say(`Could not load: ${err.message}`);
  }
  if (mine === generation) timer = setTimeout(() => poll(mine), made.pollMs ?? POLL_MS);
}

whenUnauthorised(() => {
  setToken(null);
  showLogin("The server refused the token (revoked, or the server restarted with another).");
});

document.getElementById("logout").addEventListener("click", () => {
  setToken(null);
  showLogin("Logged out.");
});
document.addEventListener("visibilitychange", () => {
  if (!document.hidden && current !== null) current.refresh().catch(() => {});
});
window.addEventListener("hashchange", show);
show();
