// Small DOM helpers shared by the views: element builder, formatters, badges,
// meters, dialogs, toasts and the inventory name cache.

import { ApiError, all, get } from "./api.js";

/** h("a", {href: "#/"}, "text", child…): an element; `on*` attributes are listeners. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    // Through the CSSOM: the page's CSP forbids style attributes.
    else if (k === "style") Object.assign(el.style, v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function fmtBytes(n) {
  if (n === undefined || n === null) return "—";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v.toFixed(0) : v.toFixed(v < 10 ? 2 : 1)) + " " + u[i];
}
export const fmtMib = (m) => fmtBytes(Number(m) * 1048576);
export function fmtRate(bps) {
  if (!bps) return "0 B/s";
  return fmtBytes(bps) + "/s";
}
export function fmtMs(ms) {
  if (ms === undefined || ms === null) return "—";
  if (ms < 1000) return Math.round(ms) + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
  const m = Math.floor(ms / 60000);
  return m + " min " + Math.round((ms % 60000) / 1000) + " s";
}
export function fmtTime(t) {
  if (!t) return "—";
  const d = new Date(t);
  return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}
export function ago(t) {
  if (!t) return "never";
  const s = Math.max(0, (Date.now() - new Date(t).getTime()) / 1000);
  if (s < 60) return Math.round(s) + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}
export const pct = (x) => (Math.round(x * 10) / 10).toFixed(1) + "%";

const TONE = {
  running: "ok", connected: "ok", completed: "ok", succeeded: "ok", applied: "ok", done: "ok",
  stopped: "muted", cancelled: "muted", dismissed: "muted", pending: "info", queued: "info",
  paused: "warn", migrating: "info", entering_maintenance: "warn", maintenance: "warn",
  preparing: "info", transferring: "info", switching_over: "info", evacuating: "warn",
  disconnected: "bad", failed: "bad", error: "bad", warning: "warn", info: "info",
};
/** A state as a coloured pill; the text is always the state's name (colour is not the only cue). */
export function badge(state, label) {
  return h("span", { class: "badge " + (TONE[state] || "muted") }, label || String(state).replaceAll("_", " "));
}

/** A labelled bar; `value` 0..100. */
export function meter(label, value, detail) {
  const v = Math.max(0, Math.min(100, Number(value) || 0));
  return h("div", { class: "meter" },
    h("div", { class: "lbl" }, h("span", {}, label), h("span", {}, detail ?? pct(v))),
    h("div", { class: "bar" + (v > 85 ? " hot" : ""), role: "progressbar", "aria-label": label,
      "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(Math.round(v)) },
    h("span", { style: { width: v + "%" } })));
}

/** An error's sentences as an alert box. */
export function errorBox(err) {
  const lines = err instanceof ApiError ? err.sentences : [String(err?.message || err)];
  const [first, ...rest] = lines;
  return h("div", { class: "error", role: "alert" }, first,
    rest.length ? h("ul", {}, rest.map((l) => h("li", {}, l))) : null);
}

export function toast(text, tone = "info") {
  const el = h("div", { class: "toast " + tone }, text);
  document.getElementById("toasts").append(el);
  setTimeout(() => el.remove(), tone === "bad" ? 9000 : 5000);
}

/**
 * A modal dialog (native <dialog>: focus stays inside, Esc closes). `build(close)`
 * returns {body, actions}; resolves when it closes.
 */
export function dialog(title, build) {
  return new Promise((resolve) => {
    const d = h("dialog", { "aria-labelledby": "dlg-title" });
    const close = (v) => { d.close(); d.remove(); resolve(v); };
    const { body, actions } = build(close);
    d.append(h("header", {}, h("h2", { id: "dlg-title" }, title)), h("div", { class: "body" }, body),
      h("footer", {}, actions));
    d.addEventListener("cancel", (e) => { e.preventDefault(); close(undefined); });
    document.body.append(d);
    d.showModal();
  });
}

/** Asks yes/no. */
export function confirmDialog(title, text, yes = "Confirm", danger = false) {
  return dialog(title, (close) => ({
    body: h("p", {}, text),
    actions: [h("button", { type: "button", onclick: () => close(false) }, "Cancel"),
      h("button", { type: "button", class: danger ? "danger" : "primary", onclick: () => close(true) }, yes)],
  }));
}

export function debounce(f, ms) {
  let t;
  return (...a) => { clearTimeout(t); t = setTimeout(() => f(...a), ms); };
}

/** Names of hosts, clusters and VMs by id, loaded on demand and refreshed on events. */
export const names = {
  hosts: new Map(),
  clusters: new Map(),
  vms: new Map(),
  hostList: [],
  clusterList: [],
  async loadHosts() {
    this.hostList = await all("/hosts");
    for (const x of this.hostList) this.hosts.set(x.id, x.name);
    return this.hostList;
  },
  async loadClusters() {
    this.clusterList = await all("/clusters");
    for (const x of this.clusterList) this.clusters.set(x.id, x.name);
    return this.clusterList;
  },
  host(id) { return id ? this.hosts.get(id) || id.slice(0, 8) : "—"; },
  vmName(id) { return this.vms.get(id) || id.slice(0, 8); },
  async vm(id) {
    if (!this.vms.has(id)) {
      try { this.vms.set(id, (await get("/vms/" + id)).name); } catch { return id.slice(0, 8); }
    }
    return this.vms.get(id);
  },
};

export const hostLink = (id) => id ? h("a", { href: "#/hosts/" + id }, names.host(id)) : "—";
export function vmLink(id, name) {
  const a = h("a", { href: "#/vms/" + id }, name || names.vms.get(id) || id.slice(0, 8));
  if (!name && !names.vms.has(id)) names.vm(id).then((n) => { a.textContent = n; });
  return a;
}

/** A table: columns [{label, num?}], rows of cells. */
export function table(columns, rows, empty = "Nothing here.") {
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : null, scope: "col" }, c.label)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: String(columns.length), class: "muted" }, empty))));
}

/** Runs `f` now and every `ms` until the returned stop function is called. */
export function every(ms, f) {
  let stopped = false;
  let timer;
  const tick = async () => {
    if (stopped) return;
    try { await f(); } catch (e) { console.warn(e); }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}
