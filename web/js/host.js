// One host: its facts, its VMs, and maintenance — the dry-run plan first (VM →
// destination, order, predicted time, problems), then live progress per VM, cancel,
// and exit (optionally moving the VMs back).

import { can, events, get, post, api, qs } from "./api.js";
import { badge, confirmDialog, dialog, errorBox, every, fill, fmtMib, h, hostLink, meter, names, toast, vmLink } from "./ui.js";

export async function render(main, { id }) {
  const head = h("div");
  const facts = h("dl", { class: "kv" });
  const maint = h("div", { id: "maintenance" });
  const vmsEl = h("div");
  const err = h("div");
  main.append(head, err,
    h("div", { class: "cols" },
      h("section", { class: "card", "aria-labelledby": "t-facts" }, h("h2", { id: "t-facts" }, "Host"), facts),
      h("section", { class: "card", "aria-labelledby": "t-maint" }, h("h2", { id: "t-maint" }, "Maintenance"), maint)),
    h("section", { class: "card", "aria-labelledby": "t-vms" }, h("h2", { id: "t-vms" }, "VMs on this host"), vmsEl));

  let host = null;
  const load = async () => {
    try {
      await names.loadHosts();
      host = await get("/hosts/" + id);
      err.replaceChildren();
    } catch (e) { fill(err, errorBox(e)); return; }
    fill(head, h("h1", {}, host.name), h("p", { class: "sub" }, badge(host.state), " ", host.accel.toUpperCase(), " · ", host.address));
    const used = host.memory.total_mib - host.memory.free_mib;
    fill(facts,
      kv("State", host.state.replaceAll("_", " ")),
      kv("Accelerator", `${host.accel} (${host.accel_reason})`),
      kv("CPU", `${host.cpu.vendor} ${host.cpu.model}, ${host.cpu.cores} cores`),
      kv("Load", meter("CPU", host.load.cpu_pct)),
      kv("Memory", meter("Memory", host.memory.total_mib ? (100 * used) / host.memory.total_mib : 0,
        `${fmtMib(used)} of ${fmtMib(host.memory.total_mib)}`)),
      kv("VMs", host.vm_count),
      kv("Agent", host.agent_version), kv("Hypervisor", host.hypervisor_version),
      kv("Last seen", host.last_seen_at ? new Date(host.last_seen_at).toLocaleTimeString() : "never"));
    const vms = await get("/vms" + qs({ host_id: id, limit: 200, sort: "name" }));
    fill(vmsEl, vms.items.length ? h("ul", {}, vms.items.map((v) => h("li", {}, vmLink(v.id, v.name), " ", badge(v.power_state))))
      : h("p", { class: "muted" }, "No VMs."));
    await loadMaintenance();
  };

  const loadMaintenance = async () => {
    let m = null;
    try { m = await get(`/hosts/${id}/maintenance`); } catch (e) { if (e.status !== 404) { fill(maint, errorBox(e)); return; } }
    const op = can("operator");
    const parts = [];
    if (m && m.state === "evacuating") {
      parts.push(progressView(m));
      if (op) parts.push(h("button", { type: "button", class: "danger", id: "maint-cancel", onclick: async () => {
        if (!(await confirmDialog("Cancel the evacuation?", "Moves already finished stay where they are; the host returns to connected.", "Cancel evacuation", true))) return;
        try { await post(`/hosts/${id}/maintenance/cancel`); toast("Evacuation cancelled"); } catch (e) { fill(maint, errorBox(e)); }
        load();
      } }, "Cancel evacuation"));
    } else if (host.state === "maintenance") {
      if (m) parts.push(progressView(m));
      parts.push(h("p", {}, "The host is in maintenance: no VM runs on it and placement skips it."));
      if (op) {
        const back = h("input", { type: "checkbox", id: "move-back" });
        parts.push(h("div", { class: "row" }, h("label", { class: "inline", for: "move-back" }, back, "Move the evacuated VMs back"),
          h("button", { type: "button", class: "primary", id: "maint-exit", onclick: async () => {
            try {
              const r = await api("DELETE", `/hosts/${id}/maintenance` + qs({ move_back: back.checked || "" }));
              toast(`${host.name} left maintenance` + (r.moved_back.length ? `; moving ${r.moved_back.length} VMs back` : ""), "ok");
              for (const n of r.not_moved_back) toast(n.detail, "bad");
            } catch (e) { fill(maint, errorBox(e)); }
            load();
          } }, "Exit maintenance")));
      }
    } else {
      if (m && m.state !== "exited") parts.push(progressView(m));
      parts.push(h("p", { class: "muted" }, "Entering maintenance moves every running VM off this host first; you see the plan before anything moves."));
      if (op && host.state === "connected") parts.push(h("button", { type: "button", class: "primary", id: "maint-enter",
        onclick: () => enterDialog(host).then((started) => { if (started) load(); }) }, "Enter maintenance…"));
    }
    fill(maint, parts);
  };

  await load();
  const stop = every(1000, async () => {
    if (host && (host.state === "entering_maintenance")) await load();
  });
  const off = events.on((ev) => { if (ev.host_id === id && ev.kind.startsWith("host.")) load(); });
  const offSync = events.onResync(load);
  return () => { stop(); off(); offSync(); };
}

function progressView(m) {
  const pctDone = m.total ? (100 * m.done) / m.total : 100;
  return h("div", { id: "maint-progress", dataset: { state: m.state } },
    h("p", {}, badge(m.state), ` ${m.done} of ${m.total} VMs moved; ${m.remaining_running} still running here.`),
    meter("Evacuation", pctDone, `${m.done}/${m.total}`),
    m.error ? h("p", { class: "bad-text" }, m.error) : null,
    m.moves.length ? h("table", {}, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "VM"), h("th", { scope: "col" }, "State"), h("th", { scope: "col" }, "Migration"))),
      h("tbody", {}, m.moves.map((mv) => h("tr", {}, h("td", {}, vmLink(mv.vm_id)), h("td", {}, badge(mv.state)),
        h("td", {}, mv.migration_id ? h("a", { href: "#/migrations/" + mv.migration_id }, "live view") : "—"))))) : null);
}

/** The enter flow: options → dry-run plan → confirm. Resolves true when it started. */
function enterDialog(host) {
  return dialog(`Enter maintenance on ${host.name}`, (close) => {
    const poweredOff = h("select", { id: "maint-powered-off" }, h("option", { value: "move" }, "move them too"), h("option", { value: "leave" }, "leave them"));
    const unmovable = h("select", { id: "maint-unmovable" }, h("option", { value: "fail" }, "refuse to enter"),
      h("option", { value: "wait" }, "wait for room"), h("option", { value: "power_off" }, "power them off"));
    const planEl = h("div", { id: "maint-plan", "aria-live": "polite" });
    const go = h("button", { type: "button", class: "primary", id: "maint-confirm", disabled: true }, "Enter maintenance");
    const req = (dry) => ({ dry_run: dry, powered_off: poweredOff.value, unmovable: unmovable.value });
    const plan = async () => {
      go.disabled = true;
      fill(planEl, h("p", { class: "muted" }, "Planning…"));
      try {
        const p = await post(`/hosts/${host.id}/maintenance`, req(true));
        fill(planEl, planView(p));
        go.disabled = !p.feasible;
      } catch (e) { fill(planEl, errorBox(e)); }
    };
    go.addEventListener("click", async () => {
      go.disabled = true;
      try {
        await post(`/hosts/${host.id}/maintenance`, req(false));
        toast(`${host.name}: evacuation started`);
        close(true);
      } catch (e) { fill(planEl, errorBox(e)); go.disabled = false; }
    });
    poweredOff.addEventListener("change", plan);
    unmovable.addEventListener("change", plan);
    plan();
    return {
      body: h("div", {}, h("div", { class: "row" },
        h("label", { for: "maint-powered-off" }, "VMs that are not running", poweredOff),
        h("label", { for: "maint-unmovable" }, "VMs no host can take", unmovable)), planEl),
      actions: [h("button", { type: "button", onclick: () => close(false) }, "Cancel"), go],
    };
  });
}

function planView(p) {
  return h("div", {},
    h("p", {}, p.feasible ? h("strong", {}, `The plan: ${p.steps.length} VMs, about ${Math.ceil(p.predicted_total_s)} s.`)
      : h("strong", { class: "bad-text" }, "This host cannot be evacuated as asked.")),
    p.problems.length ? h("ul", { class: "error" }, p.problems.map((r) => h("li", {}, r.detail))) : null,
    h("table", {}, h("thead", {}, h("tr", {}, ["#", "VM", "Action", "Destination", "Predicted", "Problems"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, p.steps.length ? p.steps.map((s) => h("tr", {},
        h("td", {}, s.order), h("td", {}, vmLink(s.vm_id, s.vm_name)), h("td", {}, s.action.replaceAll("_", " ")),
        h("td", {}, s.destination_host_id ? hostLink(s.destination_host_id) : "—"),
        h("td", {}, s.predicted_s.toFixed(1) + " s"),
        h("td", {}, s.problems.map((r) => r.detail).join(" ") || "—"))) : h("tr", {}, h("td", { colspan: "6", class: "muted" }, "Nothing to move.")))));
}

function kv(k, v) { return [h("dt", {}, k), h("dd", {}, v)]; }
