// The VM list: server-side pages (cursor paging), name search, filters by host and
// power state, sorting — fast at 40,000 VMs because the browser only ever holds one
// page. The filters live in the URL (#/vms?q=…&state=…&host=…&sort=…).

import { get, qs } from "./api.js";
import { badge, debounce, errorBox, fill, fmtMib, fmtTime, h, hostLink, names } from "./ui.js";

const PAGE = 50;
const STATES = ["running", "stopped", "paused", "migrating"];
const SORTS = { name: "Name", memory_mib: "Memory", created_at: "Created" };

export async function render(main, { query }) {
  const f = {
    q: query.get("q") || "",
    state: query.get("state") || "",
    host: query.get("host") || "",
    sort: query.get("sort") || "name",
  };
  let cursors = [undefined]; // the cursor of each page seen; the last is the current one
  let next = null;
  let seq = 0;

  const search = h("input", { type: "search", id: "vm-search", value: f.q, placeholder: "part of a name",
    maxlength: "63", "aria-describedby": "vm-count" });
  const state = h("select", { id: "vm-state" }, h("option", { value: "" }, "any"),
    STATES.map((s) => h("option", { value: s, selected: s === f.state }, s)));
  const host = h("select", { id: "vm-host" }, h("option", { value: "" }, "any"));
  const body = h("tbody");
  const headRow = h("tr");
  const tbl = h("table", { id: "vm-table", "aria-describedby": "vm-count" }, h("thead", {}, headRow), body);
  const status = h("p", { id: "vm-count", class: "small muted", "aria-live": "polite" });
  const prev = h("button", { type: "button", id: "vm-prev", onclick: () => { cursors.pop(); load(); } }, "← Previous");
  const nextBtn = h("button", { type: "button", id: "vm-next", onclick: () => { cursors.push(next); load(); } }, "Next →");
  const err = h("div");

  main.append(
    h("h1", {}, "Virtual machines"),
    h("div", { class: "card" },
      h("div", { class: "row" },
        h("label", { for: "vm-search" }, "Search by name", search),
        h("label", { for: "vm-state" }, "Power state", state),
        h("label", { for: "vm-host" }, "Host", host)),
      err, tbl, h("div", { class: "pager" }, status, prev, nextBtn)));

  names.loadHosts().then((list) => {
    for (const x of list) host.append(h("option", { value: x.id, selected: x.id === f.host }, x.name));
  }).catch(() => {});

  const header = () => {
    const col = (key, label, num) => {
      if (!SORTS[key]) return h("th", { scope: "col", class: num ? "num" : null }, label);
      const dir = f.sort === key ? "ascending" : f.sort === "-" + key ? "descending" : null;
      return h("th", { scope: "col", class: num ? "num" : null, "aria-sort": dir || "none" },
        h("button", { type: "button", class: "sort", onclick: () => {
          f.sort = f.sort === key ? "-" + key : key;
          reset();
        } }, label));
    };
    fill(headRow, col("name", "Name"), col("state", "State"), col("host", "Host"), col("vcpus", "vCPUs", true),
      col("memory_mib", "Memory", true), col("created_at", "Created"));
  };

  const syncUrl = () => {
    const u = "#/vms" + qs({ q: f.q, state: f.state, host: f.host, sort: f.sort === "name" ? "" : f.sort });
    if (location.hash !== u) history.replaceState(null, "", u);
  };

  const load = async () => {
    const my = ++seq;
    const cursor = cursors[cursors.length - 1];
    try {
      const page = await get("/vms" + qs({ limit: PAGE, cursor, q: f.q, power_state: f.state, host_id: f.host, sort: f.sort }));
      if (my !== seq) return; // a newer request superseded this one
      err.replaceChildren();
      next = page.next_cursor;
      for (const v of page.items) names.vms.set(v.id, v.name);
      fill(body, page.items.length ? page.items.map((v) => h("tr", {},
        h("td", {}, h("a", { href: "#/vms/" + v.id }, v.name)),
        h("td", {}, badge(v.power_state)),
        h("td", {}, hostLink(v.host_id)),
        h("td", { class: "num" }, v.vcpus),
        h("td", { class: "num" }, fmtMib(v.memory_mib)),
        h("td", {}, fmtTime(v.created_at)))) : h("tr", {}, h("td", { colspan: "6", class: "muted" }, "No VM matches.")));
      const first = (cursors.length - 1) * PAGE + 1;
      status.textContent = page.items.length
        ? `VMs ${first}–${first + page.items.length - 1}${next ? "" : " (last page)"}` : "";
      prev.disabled = cursors.length <= 1;
      nextBtn.disabled = !next;
      tbl.dataset.page = String(cursors.length);
      tbl.dataset.query = JSON.stringify(f);
      // For the list benchmark (bench/src/dashboard.rs): when rows first appeared.
      window.ferryTimings = window.ferryTimings || {};
      window.ferryTimings.vmsFirstRows ??= performance.now();
      tbl.dispatchEvent(new CustomEvent("ferry:rendered", { bubbles: true }));
    } catch (e) {
      if (my === seq) fill(err, errorBox(e));
    }
  };
  const reset = () => { cursors = [undefined]; header(); syncUrl(); load(); };

  search.addEventListener("input", debounce(() => { f.q = search.value.trim(); reset(); }, 120));
  state.addEventListener("change", () => { f.state = state.value; reset(); });
  host.addEventListener("change", () => { f.host = host.value; reset(); });
  header();
  await load();
}
