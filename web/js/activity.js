// Tasks and events: the task list with filters (state, kind) and pages, and the live
// event log with filters (kind prefix, severity), newest first.

import { events, get, qs } from "./api.js";
import { badge, debounce, errorBox, fill, fmtTime, h, hostLink, vmLink } from "./ui.js";

const MAX_LOG = 500;

export async function render(main) {
  // Tasks.
  const tState = h("select", { id: "task-state" }, h("option", { value: "" }, "any"),
    ["queued", "running", "succeeded", "failed", "cancelled"].map((s) => h("option", { value: s }, s)));
  const tKind = h("input", { id: "task-kind", placeholder: "e.g. vm.power", maxlength: "63" });
  const tBody = h("div");
  const tMore = h("button", { type: "button", id: "task-more" }, "Older tasks");
  let tCursor = null;
  // Events.
  const eKind = h("input", { id: "event-kind", placeholder: "e.g. migration.", maxlength: "63" });
  const eSev = h("select", { id: "event-severity" }, h("option", { value: "" }, "any"),
    ["info", "warning", "error"].map((s) => h("option", { value: s }, s)));
  const log = h("ul", { class: "log", id: "event-log", "aria-live": "off" });
  const err = h("div");
  main.append(h("h1", {}, "Tasks and events"), err,
    h("div", { class: "cols" },
      h("section", { class: "card", "aria-labelledby": "t-tasks" }, h("h2", { id: "t-tasks" }, "Tasks"),
        h("div", { class: "row" }, h("label", { for: "task-state" }, "State", tState), h("label", { for: "task-kind" }, "Kind", tKind)),
        tBody, h("div", { class: "pager" }, tMore)),
      h("section", { class: "card", "aria-labelledby": "t-events" }, h("h2", { id: "t-events" }, "Events (live)"),
        h("div", { class: "row" }, h("label", { for: "event-kind" }, "Kind starts with", eKind),
          h("label", { for: "event-severity" }, "Severity", eSev)), log)));

  const taskRow = (t) => h("tr", {}, h("td", {}, fmtTime(t.created_at)), h("td", {}, t.kind), h("td", {}, badge(t.state)),
    h("td", {}, t.target ? (t.target.kind === "vm" ? vmLink(t.target.id) : t.target.kind === "host" ? hostLink(t.target.id) : t.target.kind) : "—"),
    h("td", {}, t.error || (t.state === "running" ? Math.round(t.progress_pct) + "%" : "")));
  let rows = [];
  const loadTasks = async (more = false) => {
    try {
      const page = await get("/tasks" + qs({ limit: 50, state: tState.value, kind: tKind.value.trim(), cursor: more ? tCursor : "" }));
      rows = more ? rows.concat(page.items) : page.items;
      tCursor = page.next_cursor;
      tMore.disabled = !tCursor;
      fill(tBody, h("table", { id: "tasks" }, h("thead", {}, h("tr", {}, ["Created", "Kind", "State", "Target", ""].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows.length ? rows.map(taskRow) : h("tr", {}, h("td", { colspan: "5", class: "muted" }, "No task matches.")))));
      err.replaceChildren();
    } catch (e) { fill(err, errorBox(e)); }
  };
  tMore.addEventListener("click", () => loadTasks(true));
  tState.addEventListener("change", () => loadTasks());
  tKind.addEventListener("input", debounce(() => loadTasks(), 250));

  const matches = (ev) => (!eKind.value.trim() || ev.kind.startsWith(eKind.value.trim())) && (!eSev.value || ev.severity === eSev.value);
  const line = (ev) => h("li", { dataset: { kind: ev.kind } }, h("span", { class: "muted", title: fmtTime(ev.at) }, new Date(ev.at).toLocaleTimeString()), h("span", {}, badge(ev.severity)),
    h("span", {}, h("code", {}, ev.kind), " ", ev.message, ev.vm_id ? [" ", vmLink(ev.vm_id)] : null));
  const loadEvents = async () => {
    try {
      const page = await get("/events" + qs({ newest_first: true, limit: 200, kind: eKind.value.trim() }));
      fill(log, page.items.filter(matches).map(line));
    } catch (e) { fill(err, errorBox(e)); }
  };
  eKind.addEventListener("input", debounce(loadEvents, 250));
  eSev.addEventListener("change", loadEvents);

  await Promise.all([loadTasks(), loadEvents()]);
  const refreshTasks = debounce(() => loadTasks(), 500);
  const off = events.on((ev) => {
    if (ev.task_id || ev.kind.startsWith("vm.power") || ev.kind.startsWith("host.maintenance")) refreshTasks();
    if (ev.kind === "migration.progress" && !eKind.value.trim().startsWith("migration.progress")) return;
    if (!matches(ev)) return;
    log.prepend(line(ev));
    while (log.children.length > MAX_LOG) log.lastChild.remove();
  });
  const offSync = events.onResync(() => { loadTasks(); loadEvents(); });
  return () => { off(); offSync(); };
}
