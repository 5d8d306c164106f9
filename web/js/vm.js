// One VM: its spec and host, power actions (each a task whose outcome is shown), the
// migrate dialog, the serial console's tail and its migration history.

import { can, events, get, post, qs, waitTask } from "./api.js";
import { badge, errorBox, every, fill, fmtBytes, fmtMib, fmtMs, fmtTime, h, hostLink, names, toast } from "./ui.js";
import { migrateDialog } from "./migrate.js";

/** Which power actions make sense in which state. */
const ACTIONS = {
  running: [["shutdown", "Shut down"], ["off", "Power off"], ["reset", "Reset"], ["pause", "Pause"]],
  paused: [["resume", "Resume"], ["off", "Power off"]],
  stopped: [["on", "Power on"]],
  migrating: [],
};

export async function render(main, { id }) {
  const head = h("div");
  const actions = h("div", { class: "row", id: "vm-actions" });
  const spec = h("dl", { class: "kv" });
  const history = h("div");
  const consoleEl = h("pre", { class: "console", id: "vm-console", tabindex: "0", "aria-label": "Serial console" });
  const err = h("div");
  main.append(head, err, actions,
    h("div", { class: "cols" },
      h("section", { class: "card", "aria-labelledby": "t-spec" }, h("h2", { id: "t-spec" }, "Specification"), spec),
      h("section", { class: "card", "aria-labelledby": "t-con" },
        h("div", { class: "spread" }, h("h2", { id: "t-con" }, "Console (tail)"),
          h("button", { type: "button", onclick: () => loadConsole() }, "Refresh")), consoleEl)),
    h("section", { class: "card", "aria-labelledby": "t-hist" }, h("h2", { id: "t-hist" }, "Migration history"), history));

  let vm = null;
  const load = async () => {
    try {
      vm = await get("/vms/" + id);
      await names.loadHosts();
      names.vms.set(vm.id, vm.name);
      err.replaceChildren();
    } catch (e) {
      fill(err, errorBox(e));
      return;
    }
    fill(head, h("h1", {}, vm.name), h("p", { class: "sub" }, badge(vm.power_state), " on ", hostLink(vm.host_id)));
    fill(spec,
      kv("Host", hostLink(vm.host_id)),
      kv("Power state", vm.power_state),
      kv("vCPUs", vm.vcpus), kv("Memory", fmtMib(vm.memory_mib)),
      kv("CPU model", vm.cpu_model), kv("Machine", vm.machine_type),
      kv("Disks", vm.disks.length ? vm.disks.map((d) => h("div", {}, fmtBytes(d.size_bytes), " ", h("code", {}, d.path))) : "none"),
      kv("NICs", vm.nics.length ? vm.nics.map((n) => h("div", { class: "mono" }, n.mac)) : "none"),
      kv("Boot", vm.boot ? (vm.boot.kernel ? "kernel " + vm.boot.kernel : "disk") : "—"),
      kv("Migration policy", `${vm.migration_policy.mode}, downtime ≤ ${vm.migration_policy.max_downtime_ms} ms`),
      kv("Balancing", vm.drs_automation ? vm.drs_automation.replaceAll("_", " ") : "the cluster's"),
      kv("Id", h("code", {}, vm.id)),
      kv("Created", fmtTime(vm.created_at)));
    fill(actions);
    if (can("operator")) {
      for (const [a, label] of ACTIONS[vm.power_state] || []) {
        actions.append(h("button", { type: "button", class: a === "off" ? "danger" : null, dataset: { action: a },
          onclick: (e) => power(a, label, e.target) }, label));
      }
      if (vm.power_state === "running" || vm.power_state === "paused") {
        actions.append(h("button", { type: "button", class: "primary", id: "migrate",
          onclick: async () => {
            const m = await migrateDialog(vm);
            if (m) location.hash = "#/migrations/" + m.id;
          } }, "Migrate…"));
      }
    }
    const migs = await get("/migrations" + qs({ vm_id: id, limit: 20 })).catch(() => ({ items: [] }));
    fill(history, migs.items.length ? h("table", { id: "vm-migrations" },
      h("thead", {}, h("tr", {}, ["When", "From → to", "State", "Total", "Downtime", "Bytes", "Strategy", "Relay frames"]
        .map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, migs.items.map((m) => h("tr", {},
        h("td", {}, h("a", { href: "#/migrations/" + m.id }, fmtTime(m.created_at))),
        h("td", {}, hostLink(m.source_host_id), " → ", hostLink(m.destination_host_id)),
        h("td", {}, badge(m.state)),
        h("td", {}, fmtMs(m.result?.total_ms)),
        h("td", { class: "downtime" }, fmtMs(m.result?.downtime_ms)),
        h("td", {}, m.result ? fmtBytes(m.result.transferred_bytes) : "—"),
        h("td", {}, m.result?.strategy || m.prediction?.strategy || "—"),
        h("td", {}, m.result?.relay_frames ?? "—")))))
      : h("p", { class: "muted" }, "Never migrated."));
  };

  const power = async (action, label, btn) => {
    btn.disabled = true;
    try {
      const task = await post(`/vms/${id}/power`, { action });
      toast(`${label}: started`);
      const done = await waitTask(task.id);
      if (done.state === "succeeded") toast(`${label} ${vm.name}: done`, "ok");
      else toast(`${label} ${vm.name}: ${done.state}${done.error ? " — " + done.error : ""}`, "bad");
    } catch (e) {
      fill(err, errorBox(e));
    }
    btn.disabled = false;
    load();
  };

  const loadConsole = async () => {
    try {
      const text = await get(`/vms/${id}/console` + qs({ bytes: 8192 }));
      consoleEl.textContent = text || "(nothing yet)";
      consoleEl.scrollTop = consoleEl.scrollHeight;
    } catch (e) {
      consoleEl.textContent = e.message;
    }
  };

  await load();
  const stopConsole = every(5000, loadConsole);
  const off = events.on((ev) => { if (ev.vm_id === id && ev.kind !== "migration.progress") load(); });
  const offSync = events.onResync(load);
  return () => { stopConsole(); off(); offSync(); };
}

function kv(k, v) {
  return [h("dt", {}, k), h("dd", {}, v)];
}
