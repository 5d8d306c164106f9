// Migrations: the list, and the live view of one — phase, a progress bar that never
// goes backwards, ETA, charts of bytes and rates over time, each `auto` decision as
// it happens, cancel, and the final summary with each phase's duration.

import { can, events, get, post, qs } from "./api.js";
import { lineChart } from "./chart.js";
import { badge, confirmDialog, errorBox, every, fill, fmtBytes, fmtMs, fmtRate, fmtTime, h, hostLink, names, vmLink } from "./ui.js";

const ACTIVE = ["queued", "preparing", "transferring", "switching_over"];

export async function renderList(main) {
  const body = h("div");
  main.append(h("h1", {}, "Migrations"), h("p", { class: "sub" }, "Newest first."), h("div", { class: "card" }, body));
  const load = async () => {
    await names.loadHosts();
    const page = await get("/migrations" + qs({ limit: 100 }));
    fill(body, h("table", { id: "migrations" },
      h("thead", {}, h("tr", {}, ["Started", "VM", "From → to", "State", "Progress", "Total", "Downtime"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, page.items.length ? page.items.map((m) => h("tr", {},
        h("td", {}, h("a", { href: "#/migrations/" + m.id }, fmtTime(m.created_at))),
        h("td", {}, vmLink(m.vm_id)),
        h("td", {}, hostLink(m.source_host_id), " → ", hostLink(m.destination_host_id)),
        h("td", {}, badge(m.state)),
        h("td", {}, Math.floor(m.progress.percent) + "%"),
        h("td", {}, fmtMs(m.result?.total_ms)),
        h("td", {}, fmtMs(m.result?.downtime_ms)))) : h("tr", {}, h("td", { colspan: "7", class: "muted" }, "No migration yet.")))));
  };
  await load();
  const off = events.on((ev) => { if (/^migration\.(requested|completed|failed|cancelled)/.test(ev.kind)) load(); });
  const offSync = events.onResync(load);
  return () => { off(); offSync(); };
}

export async function render(main, { id }) {
  await names.loadHosts();
  const head = h("div");
  const bar = h("span", { style: { width: "0%" } });
  const barWrap = h("div", { class: "bar big ok", role: "progressbar", id: "mig-progress", "aria-label": "Migration progress",
    "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": "0" }, bar);
  const stats = h("div", { class: "stat-line", id: "mig-stats" });
  const cancelBtn = h("button", { type: "button", class: "danger", id: "mig-cancel", hidden: true }, "Cancel migration");
  const summary = h("div", { id: "mig-summary" });
  const decisions = h("ul", { class: "log decisions", id: "mig-decisions" });
  const bytesEl = h("div", { class: "chart" });
  const ratesEl = h("div", { class: "chart" });
  const err = h("div");
  main.append(head, err,
    h("section", { class: "card", "aria-labelledby": "t-prog" },
      h("div", { class: "spread" }, h("h2", { id: "t-prog" }, "Progress"), cancelBtn), barWrap, stats, summary),
    h("div", { class: "cols" },
      h("section", { class: "card", "aria-labelledby": "t-bytes" }, h("h2", { id: "t-bytes" }, "Bytes sent and remaining"), bytesEl),
      h("section", { class: "card", "aria-labelledby": "t-rates" }, h("h2", { id: "t-rates" }, "Dirty rate and bandwidth"), ratesEl)),
    h("section", { class: "card", "aria-labelledby": "t-dec" }, h("h2", { id: "t-dec" }, "Decisions"), decisions));

  const bytesChart = lineChart(bytesEl, { series: [{ label: "sent" }, { label: "remaining" }], yValue: fmtBytes });
  const ratesChart = lineChart(ratesEl, { series: [{ label: "dirty rate" }, { label: "bandwidth" }], yValue: fmtRate });
  let shown = 0; // the bar's value: never lower than before
  let done = false;
  let lastT = 0;

  const decision = (ev) => decisions.append(h("li", {}, h("span", { class: "muted" }, new Date(ev.at).toLocaleTimeString()),
    h("span", {}, ev.message)));
  // The decisions already taken (the view may open mid-move).
  get("/events" + qs({ newest_first: true, kind: "migration.", limit: 200 })).then((page) => {
    for (const ev of page.items.reverse()) {
      if (ev.data?.migration_id === id && ev.kind !== "migration.progress") decision(ev);
    }
  }).catch(() => {});

  const show = (m) => {
    fill(head, h("h1", {}, "Migration of ", vmLink(m.vm_id)),
      h("p", { class: "sub" }, hostLink(m.source_host_id), " → ", hostLink(m.destination_host_id), " · ",
        badge(m.state), " ", h("span", { id: "mig-phase" }, m.phase ? "phase: " + m.phase.replaceAll("_", " ") : "")));
    const p = m.progress;
    shown = Math.max(shown, m.state === "completed" ? 100 : p.percent);
    bar.style.width = shown + "%";
    barWrap.setAttribute("aria-valuenow", String(Math.floor(shown)));
    barWrap.dataset.value = String(shown);
    const active = ACTIVE.includes(m.state);
    fill(stats,
      stat("Done", Math.floor(shown) + "%"),
      stat("ETA", active && p.eta_ms ? fmtMs(p.eta_ms) : "—"),
      stat("Pass", p.iteration || "—"),
      stat("Sent", fmtBytes(p.transferred_bytes)),
      stat("Remaining", fmtBytes(p.remaining_bytes)),
      stat("Dirty rate", fmtRate(p.dirty_rate_bps)),
      stat("Bandwidth", fmtRate(p.bandwidth_bps)),
      stat("Expected downtime", p.expected_downtime_ms ? fmtMs(p.expected_downtime_ms) : "—"),
      p.throttle_pct ? stat("CPU throttle", p.throttle_pct + "%") : null);
    cancelBtn.hidden = !(active && can("operator"));
    const t = Date.now() / 1000;
    if (active && p.transferred_bytes && t - lastT >= 0.25) {
      lastT = t;
      bytesChart.push(t, p.transferred_bytes, p.remaining_bytes);
      ratesChart.push(t, p.dirty_rate_bps, p.bandwidth_bps);
    }
    if (!active && !done) {
      done = true;
      fill(summary, finalSummary(m));
    }
  };

  const load = async () => {
    try {
      show(await get("/migrations/" + id));
      err.replaceChildren();
    } catch (e) {
      fill(err, errorBox(e));
    }
  };
  cancelBtn.addEventListener("click", async () => {
    if (!(await confirmDialog("Cancel the migration?", "The VM keeps running on its source host.", "Cancel migration", true))) return;
    try { show(await post(`/migrations/${id}/cancel`)); } catch (e) { fill(err, errorBox(e)); }
  });
  const stopPoll = every(500, async () => { if (!done) await load(); });
  const off = events.on((ev) => {
    if (ev.data?.migration_id !== id) return;
    if (ev.kind === "migration.progress") return; // the poll shows progress
    decision(ev);
    load();
  });
  const offSync = events.onResync(load);
  return () => { stopPoll(); off(); offSync(); bytesChart.destroy(); ratesChart.destroy(); };
}

function stat(l, v) {
  return h("div", {}, h("span", { class: "l" }, l), h("span", { class: "v" }, v));
}

function finalSummary(m) {
  const r = m.result;
  const phases = m.phases || [];
  const total = phases.reduce((a, p) => a + (p.duration_ms || 0), 0);
  return h("div", { class: "card", id: "mig-final", dataset: { state: m.state } },
    h("h3", {}, m.state === "completed" ? "Completed" : m.state === "cancelled" ? "Cancelled" : "Failed"),
    m.error ? h("p", { class: "bad-text" }, m.error) : null,
    r ? h("div", { class: "stat-line" },
      stat("Total", fmtMs(r.total_ms)), stat("Downtime", fmtMs(r.downtime_ms)),
      stat("Transferred", fmtBytes(r.transferred_bytes)), stat("Passes", r.iterations),
      stat("Strategy", r.strategy), r.relay_frames != null ? stat("Frames the relay held", r.relay_frames) : null) : null,
    m.prediction ? h("p", { class: "small muted" }, `Predicted: ${fmtMs(m.prediction.total_ms)} total, ${fmtMs(m.prediction.downtime_ms)} downtime (${m.prediction.strategy}).`) : null,
    phases.length ? [h("div", { class: "timeline", "aria-hidden": "true" }, phases.map((p, i) => h("span", {
      title: p.name, style: { width: (100 * (p.duration_ms || 0)) / (total || 1) + "%", opacity: String(0.45 + 0.55 * ((i % 3) / 2)), background: "var(--primary)" } }))),
    h("table", {}, h("tbody", {}, phases.map((p) => h("tr", {}, h("td", {}, p.name), h("td", { class: "num" }, fmtMs(p.duration_ms))))))] : null);
}
