// Small DOM and formatting helpers shared by every page (no framework, no build step).

/** An element: h("a", {href: "#/x", class: "y"}, "text", child, [more, children]). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** An SVG element (charts). */
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/**
 * Put `node` in place of `container`'s content, keeping keyboard focus on the element with the
 * same data-key (a poll re-renders a table; the operator tabbing through it must not lose place).
 */
export function swap(container, node) {
  const active = document.activeElement;
  const key = active && container.contains(active) ? active.getAttribute("data-key") : null;
  container.replaceChildren(node);
  if (key) {
    const again = container.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (again) again.focus();
  }
}

export function short(sha) {
  return sha ? sha.slice(0, 12) : "";
}

export function when(ts) {
  if (ts === null || ts === undefined) return "";
  const d = new Date(ts * 1000);
  return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

export function ago(ts, now) {
  if (ts === null || ts === undefined) return "never";
  const s = Math.max(0, (now ?? Date.now() / 1000) - ts);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** A time element with the full date as its text's title (screen readers read the text). */
export function timeEl(ts, now, relative = true) {
  if (ts === null || ts === undefined) return h("span", { class: "muted" }, "never");
  const iso = new Date(ts * 1000).toISOString();
  return h("time", { datetime: iso, title: when(ts) }, relative ? ago(ts, now) : when(ts));
}

export function pct(value, digits = 1) {
  return value === null || value === undefined ? "–" : `${(100 * value).toFixed(digits)}%`;
}

export function ms(value) {
  if (value === null || value === undefined) return "–";
  return value < 10 ? `${value.toFixed(2)} ms` : `${value.toFixed(1)} ms`;
}

export function num(value, digits = 3) {
  if (value === null || value === undefined) return "–";
  return Number(value).toFixed(digits).replace(/\.?0+$/, "");
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** A status word in a coloured badge (the colour is never the only signal: the word is there). */
export function badge(status, title) {
  return h("span", { class: `badge s-${String(status).replace(/[^a-z-]/g, "")}`, title }, status);
}

/** A definition list from [term, value] pairs (values may be nodes). */
export function facts(pairs) {
  return h(
    "dl",
    { class: "facts" },
    pairs.filter((p) => p).map(([term, value]) => [h("dt", {}, term), h("dd", {}, value ?? "–")]),
  );
}

/** A table: headers, rows of cells; caption for screen readers. */
export function table(caption, headers, rows, attrs = {}) {
  return h(
    "table",
    attrs,
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c))))),
  );
}

export function link(href, text, key) {
  return h("a", { href, "data-key": key ?? href }, text);
}
