// The migrate dialog: a destination (or placement's choice), then every compatibility
// check and the prediction, shown before anything moves. Confirm starts the move.

import { all, post } from "./api.js";
import { dialog, errorBox, fill, fmtBytes, fmtMs, fmtRate, h, names } from "./ui.js";

export function migrateDialog(vm) {
  return dialog(`Migrate ${vm.name}`, (close) => {
    const dest = h("select", { id: "mig-dest" }, h("option", { value: "" }, "Let placement choose"));
    const ds = h("select", { id: "mig-datastore" }, h("option", { value: "" }, "Keep the disks (copy only if needed)"));
    const mode = h("select", { id: "mig-mode" }, ["auto", "precopy", "postcopy"].map((m) =>
      h("option", { value: m, selected: m === vm.migration_policy.mode }, m)));
    const downtime = h("input", { id: "mig-downtime", type: "number", min: "1", max: "60000",
      value: String(vm.migration_policy.max_downtime_ms) });
    const result = h("div", { id: "mig-checks", "aria-live": "polite" }, h("p", { class: "muted" }, "Checking…"));
    const go = h("button", { type: "button", class: "primary", id: "mig-confirm", disabled: true }, "Migrate");
    let checked = null;
    let seq = 0;

    let datastores = [];
    // The datastores a storage migration can copy the disks to: the destination's.
    // (The VM's own host as destination: a storage-only move, which needs one.)
    const fillDatastores = () => {
      const keep = ds.value;
      const storageOnly = dest.value === vm.host_id;
      ds.replaceChildren(h("option", { value: "" },
        storageOnly ? "Choose the datastore to move them to" : "Keep the disks (copy only if needed)"));
      if (!dest.value || !vm.disks.length) return;
      for (const d of datastores) {
        if (!d.host_ids.includes(dest.value) || vm.disks.some((x) => x.datastore_id === d.id)) continue;
        ds.append(h("option", { value: d.id, selected: d.id === keep }, `Copy them to ${d.name} (${d.kind}, ${fmtBytes(d.free_bytes)} free)`));
      }
    };
    const body = () => {
      const b = {};
      if (dest.value) b.destination_host_id = dest.value;
      if (ds.value) b.destination_datastore_id = ds.value;
      const dt = Number(downtime.value);
      b.policy = { ...vm.migration_policy, mode: mode.value };
      if (Number.isInteger(dt) && dt > 0) b.policy.max_downtime_ms = dt;
      return b;
    };
    const check = async () => {
      const my = ++seq;
      go.disabled = true;
      fill(result, h("p", { class: "muted" }, "Checking…"));
      try {
        const r = await post(`/vms/${vm.id}/migrate/check`, body());
        if (my !== seq) return;
        checked = r;
        fill(result, checksView(r));
        go.disabled = !r.compatible;
      } catch (e) {
        if (my === seq) fill(result, errorBox(e));
      }
    };
    go.addEventListener("click", async () => {
      go.disabled = true;
      try {
        const b = body();
        // Placement's choice is what the user saw checked: move there.
        if (!b.destination_host_id && checked?.destination_host_id) b.destination_host_id = checked.destination_host_id;
        close(await post(`/vms/${vm.id}/migrate`, b));
      } catch (e) {
        fill(result, errorBox(e), checked ? checksView(checked) : null);
        go.disabled = false;
      }
    });
    all("/hosts").then((hosts) => {
      if (vm.disks.length) dest.append(h("option", { value: vm.host_id }, "This host: move only the disks (storage-only)"));
      for (const x of hosts) {
        if (x.id === vm.host_id || x.cluster_id !== vm.cluster_id) continue;
        dest.append(h("option", { value: x.id }, `${x.name} (${x.state.replaceAll("_", " ")})`));
      }
    }).catch((e) => fill(result, errorBox(e)));
    all("/datastores").then((list) => { datastores = list; fillDatastores(); }).catch(() => {});
    dest.addEventListener("change", fillDatastores);
    for (const el of [dest, ds, mode, downtime]) el.addEventListener("change", check);
    check();
    return {
      body: h("div", {},
        h("div", { class: "row" },
          h("label", { for: "mig-dest" }, "Destination", dest),
          vm.disks.length ? h("label", { for: "mig-datastore" }, "Disks", ds) : null,
          h("label", { for: "mig-mode" }, "Mode", mode),
          h("label", { for: "mig-downtime" }, "Max downtime (ms)", downtime)),
        h("p", { class: "small muted" }, "From ", names.host(vm.host_id), ". Nothing moves until you confirm."),
        result),
      actions: [h("button", { type: "button", onclick: () => close(null) }, "Cancel"), go],
    };
  });
}

/** The checks as a list with a mark and a sentence each, then the prediction. */
export function checksView(r) {
  const p = r.prediction;
  return h("div", {},
    h("p", {}, r.compatible
      ? h("strong", {}, "Compatible" + (r.destination_host_id ? ` with ${names.host(r.destination_host_id)}` : "") + ".")
      : h("strong", { class: "bad-text" }, "Not compatible: the failed checks say why.")),
    h("ul", { class: "checks" }, r.checks.map((c) => h("li", { class: c.passed ? "pass" : "fail", dataset: { check: c.name } },
      h("span", { class: "mark", "aria-hidden": "true" }, c.passed ? "✓" : "✗"),
      h("span", {}, h("span", { class: "name" }, c.name), " — ", c.passed ? "passed" : "failed",
        detailOf(c) ? [": ", h("span", { class: "detail" }, detailOf(c))] : null)))),
    p ? h("div", { class: "stat-line", id: "mig-prediction" },
      stat("Strategy", p.strategy), stat("Predicted total", fmtMs(p.total_ms)),
      stat("Predicted downtime", fmtMs(p.downtime_ms)),
      stat("Bandwidth", fmtRate(p.bandwidth_bps)), stat("Dirty rate", fmtRate(p.dirty_rate_bps)),
      p.disk_bytes ? stat("Disks to copy", fmtBytes(p.disk_bytes)) : null)
      : h("p", { class: "muted" }, "No prediction (the checks must pass first)."));
}

/** The check's sentence without a leading "<name>: " (the list already names it). */
function detailOf(c) {
  const d = c.detail || "";
  const rest = d.startsWith(c.name + ": ") ? d.slice(c.name.length + 2) : d;
  return c.passed && rest === "ok" ? "" : rest;
}

function stat(l, v) {
  return h("div", {}, h("span", { class: "l" }, l), h("span", { class: "v" }, v));
}

