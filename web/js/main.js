// The dashboard's shell: login, the router (#/path), the header, and the live
// event stream every view listens to.

import { ApiError, events, get, session, setUnauthorizedHandler } from "./api.js";
import { errorBox, fill, h } from "./ui.js";
import * as overview from "./overview.js";
import * as vms from "./vms.js";
import * as vm from "./vm.js";
import * as migration from "./migration.js";
import * as host from "./host.js";
import * as balancing from "./balancing.js";
import * as activity from "./activity.js";

const main = document.getElementById("main");
const top = document.getElementById("top");
let cleanup = null;

const ROUTES = [
  [/^\/?$/, "overview", overview.render],
  [/^\/vms$/, "vms", vms.render],
  [/^\/vms\/([0-9a-f-]{36})$/, "vms", vm.render],
  [/^\/migrations$/, "migrations", migration.renderList],
  [/^\/migrations\/([0-9a-f-]{36})$/, "migrations", migration.render],
  [/^\/hosts\/([0-9a-f-]{36})$/, "overview", host.render],
  [/^\/balancing$/, "balancing", balancing.render],
  [/^\/activity$/, "activity", activity.render],
];

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, query] = raw.split("?");
  return { path, query: new URLSearchParams(query || "") };
}

async function route() {
  if (!session.token || !session.me) return;
  cleanup?.();
  cleanup = null;
  const { path, query } = parseHash();
  for (const [re, nav, render] of ROUTES) {
    const m = path.match(re);
    if (!m) continue;
    for (const a of top.querySelectorAll("nav a")) {
      if (a.dataset.nav === nav) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    main.replaceChildren();
    try {
      cleanup = (await render(main, { id: m[1], query })) || null;
    } catch (e) {
      main.append(errorBox(e));
    }
    // Keyboard and screen-reader users land on the new page's heading.
    const h1 = main.querySelector("h1");
    if (h1) { h1.tabIndex = -1; h1.focus({ preventScroll: true }); }
    return;
  }
  fill(main, h("h1", {}, "Not found"), h("p", {}, "No page at ", h("code", {}, path), ". ",
    h("a", { href: "#/" }, "Back to the overview.")));
}

function showLogin(message) {
  top.hidden = true;
  events.stop();
  cleanup?.();
  cleanup = null;
  document.title = "Ferry — log in";
  const err = h("div");
  if (message) err.append(h("div", { class: "notice", role: "status" }, message));
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true,
    spellcheck: "false" });
  const form = h("form", { onsubmit: async (e) => {
    e.preventDefault();
    err.replaceChildren();
    const token = input.value.trim();
    try {
      session.me = await get("/whoami", { token });
      session.set(token);
      start();
    } catch (ex) {
      err.append(errorBox(ex instanceof ApiError && ex.status === 401
        ? new Error("That token is not valid: check it, or ask an admin for a new one (ferryctl token create).") : ex));
      input.focus();
    }
  } },
  h("label", { for: "token" }, "API token", input),
  h("p", { class: "muted small" }, "An API token of any role. The make demo lab writes the admin's to ",
    h("code", {}, "ferry-data/admin.token"), ". It is kept only for this browser tab's session."),
  err,
  h("button", { type: "submit", class: "primary" }, "Log in"));
  fill(main, h("section", { class: "card login", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "Ferry"),
    h("p", { class: "sub" }, "Live migration and the cluster around it."), form));
  input.focus();
}

let started = false;
function start() {
  top.hidden = false;
  document.title = "Ferry";
  fill(document.getElementById("who"), session.me.name + " · " + session.me.role);
  events.since = null;
  events.start();
  if (!started) {
    started = true;
    window.addEventListener("hashchange", route);
  }
  route();
}

setUnauthorizedHandler(() => {
  session.clear();
  showLogin("Your token is no longer accepted (deleted or expired). Log in again.");
});

document.getElementById("logout").addEventListener("click", () => {
  session.clear();
  showLogin("Logged out.");
});

const live = document.getElementById("live");
events.onState((s) => {
  live.dataset.state = s === "live" ? "live" : s === "down" ? "down" : "wait";
  live.textContent = s === "live" ? "live" : s === "down" ? "control plane unreachable, retrying" : "reconnecting";
});

(async () => {
  if (!session.token) return showLogin();
  try {
    session.me = await get("/whoami");
    start();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return; // handler showed the login
    // The control plane is down: keep trying until it answers.
    fill(main, errorBox(e), h("p", { class: "muted" }, "Retrying…"));
    const retry = setInterval(async () => {
      try { session.me = await get("/whoami"); clearInterval(retry); start(); } catch { /* still down */ }
    }, 2000);
  }
})();
