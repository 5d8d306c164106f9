// Balancing: each cluster's settings (automation level, threshold, interval), the
// imbalance over time, recommendations with their reason and expected gain (apply /
// dismiss), a pass on demand, and the placement rules with an editor.

import { api, can, events, get, post } from "./api.js";
import { lineChart } from "./chart.js";
import { badge, confirmDialog, errorBox, fill, h, hostLink, names, toast, vmLink } from "./ui.js";

const KINDS = {
  affinity: "Keep together (affinity)",
  anti_affinity: "Keep apart (anti-affinity)",
  must_run_on: "Must run on hosts",
  must_not_run_on: "Must not run on hosts",
  should_run_on: "Should run on hosts",
  should_not_run_on: "Should not run on hosts",
};

export async function render(main) {
  main.append(h("h1", {}, "Balancing"), h("p", { class: "sub" },
    "How evenly each cluster's load is spread, what the balancer recommends, and the rules it keeps."));
  const clusters = await names.loadClusters();
  await names.loadHosts();
  const cleanups = [];
  for (const c of clusters) cleanups.push(await clusterSection(main, c));
  return () => cleanups.forEach((f) => f());
}

async function clusterSection(main, cluster) {
  const settings = h("div");
  const now = h("div");
  const chartEl = h("div", { class: "chart" });
  const recs = h("div", { id: "recommendations" });
  const rules = h("div", { id: "rules" });
  const err = h("div");
  main.append(h("section", { "aria-labelledby": "c-" + cluster.id },
    h("h2", { id: "c-" + cluster.id }, "Cluster ", cluster.name), err,
    h("div", { class: "cols" },
      h("div", { class: "card" }, h("h3", {}, "Settings"), settings),
      h("div", { class: "card" }, h("h3", {}, "Imbalance now"), now)),
    h("div", { class: "card" }, h("h3", {}, "Imbalance over time (each pass, before its moves)"), chartEl),
    h("div", { class: "card" }, h("h3", {}, "Recommendations"), recs),
    h("div", { class: "card" }, h("h3", {}, "Placement rules"), rules)));
  const chart = lineChart(chartEl, { series: [{ label: "imbalance" }, { label: "tolerated", color: "--warn" }],
    yValue: (v) => v.toFixed(3) });

  const load = async () => {
    let d;
    try {
      [d, cluster] = await Promise.all([get(`/clusters/${cluster.id}/drs`), get(`/clusters/${cluster.id}`)]);
      err.replaceChildren();
    } catch (e) { fill(err, errorBox(e)); return; }
    fill(settings, settingsForm(cluster, load));
    fill(now, h("div", { class: "stat-line" },
      stat("Combined", d.imbalance.combined.toFixed(3)), stat("CPU", d.imbalance.cpu.toFixed(3)),
      stat("Memory", d.imbalance.memory.toFixed(3)), stat("Tolerated", d.tolerance != null ? d.tolerance.toFixed(3) : "—"),
      stat("Hosts", d.hosts), stat("VMs", d.vms)),
      d.rule_violations.length ? h("div", { class: "error" }, "Broken rules: ", d.rule_violations.join("; ")) : null,
      can("operator") ? h("div", { class: "row" },
        h("button", { type: "button", id: "drs-dry", onclick: () => run(true) }, "Run a pass (dry run)"),
        h("button", { type: "button", class: "primary", id: "drs-run", onclick: () => run(false) }, "Run a pass")) : null);
    const hist = [...d.history].reverse();
    chart.set(hist.map((p) => new Date(p.at).getTime() / 1000), hist.map((p) => p.before.combined),
      hist.map((p) => p.tolerance ?? null));
    const pending = d.recommendations;
    fill(recs, pending.length ? h("table", {}, h("thead", {}, h("tr", {},
      ["VM", "From → to", "Reason", "Expected gain", "Cost", "State", ""].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, pending.map((r) => h("tr", {},
      h("td", {}, vmLink(r.vm_id)), h("td", {}, hostLink(r.from_host_id), " → ", hostLink(r.to_host_id)),
      h("td", {}, r.reason), h("td", {}, r.gain.toFixed(3)), h("td", {}, r.cost_s.toFixed(1) + " s"),
      h("td", {}, badge(r.state)),
      h("td", {}, r.state === "pending" && can("operator") ? h("div", { class: "row" },
        h("button", { type: "button", class: "primary", onclick: () => act(r, "apply") }, "Apply"),
        h("button", { type: "button", onclick: () => act(r, "dismiss") }, "Dismiss"))
        : r.migration_id ? h("a", { href: "#/migrations/" + r.migration_id }, "migration") : "")))))
      : h("p", { class: "muted" }, "No recommendations: run a pass to ask for some."));
    const ruleList = await get(`/clusters/${cluster.id}/rules?limit=1000`).catch(() => ({ items: [] }));
    fill(rules, rulesView(cluster, ruleList.items, load));
  };
  const run = async (dry) => {
    try {
      const r = await post(`/clusters/${cluster.id}/drs/run`, { dry_run: dry });
      toast(`Pass: imbalance ${r.pass.before.combined.toFixed(3)} → ${r.pass.after.combined.toFixed(3)}, ${r.recommendations.length} recommendations`, "ok");
    } catch (e) { fill(err, errorBox(e)); }
    load();
  };
  const act = async (r, what) => {
    try {
      const out = await post(`/drs/recommendations/${r.id}/${what}`);
      if (what === "apply") toast("Applied: the move started", "ok");
      if (what === "apply" && out?.id) location.hash = "#/migrations/" + out.id;
    } catch (e) { fill(err, errorBox(e)); }
    load();
  };
  await load();
  const off = events.on((ev) => { if (/^(drs|rule)\./.test(ev.kind)) load(); });
  const offSync = events.onResync(load);
  return () => { off(); offSync(); chart.destroy(); };
}

function settingsForm(cluster, reload) {
  const admin = can("admin");
  const auto = h("select", { id: "drs-automation", disabled: !admin }, ["manual", "partially_automated", "fully_automated"]
    .map((a) => h("option", { value: a, selected: a === cluster.drs.automation }, a.replaceAll("_", " "))));
  const threshold = h("select", { id: "drs-threshold", disabled: !admin }, [1, 2, 3, 4, 5].map((t) =>
    h("option", { value: String(t), selected: t === cluster.drs.threshold }, t === 1 ? "1 (most conservative)" : t === 5 ? "5 (most aggressive)" : String(t))));
  const interval = h("input", { id: "drs-interval", type: "number", min: "10", max: "86400", disabled: !admin,
    value: String(cluster.drs.interval_s) });
  const msg = h("div");
  return h("form", { onsubmit: async (e) => {
    e.preventDefault();
    try {
      await api("PATCH", `/clusters/${cluster.id}`, { drs: { automation: auto.value, threshold: Number(threshold.value),
        interval_s: Number(interval.value) } });
      toast("Settings saved", "ok");
      reload();
    } catch (ex) { fill(msg, errorBox(ex)); }
  } },
  h("div", { class: "row" },
    h("label", { for: "drs-automation" }, "Automation", auto),
    h("label", { for: "drs-threshold" }, "Threshold", threshold),
    h("label", { for: "drs-interval" }, "Interval (s)", interval)),
  msg,
  admin ? h("p", {}, h("button", { type: "submit", class: "primary" }, "Save settings")) : h("p", { class: "small muted" }, "Only an admin changes these."));
}

function rulesView(cluster, list, reload) {
  const admin = can("admin");
  const table = list.length ? h("table", {}, h("thead", {}, h("tr", {},
    ["Name", "Kind", "VMs", "Hosts", "Holds", ""].map((c) => h("th", { scope: "col" }, c)))),
  h("tbody", {}, list.map((r) => h("tr", {},
    h("td", {}, r.name), h("td", {}, KINDS[r.kind] || r.kind),
    h("td", {}, r.vm_ids.map((v, i) => [i ? ", " : "", vmLink(v)])),
    h("td", {}, r.host_ids.length ? r.host_ids.map((x, i) => [i ? ", " : "", hostLink(x)]) : "—"),
    h("td", {}, r.violations.length ? h("span", { class: "bad-text" }, r.violations.join("; ")) : badge("ok", "holds")),
    h("td", {}, admin ? h("button", { type: "button", class: "danger", onclick: async () => {
      if (!(await confirmDialog("Delete rule?", `Delete the rule ${r.name}?`, "Delete", true))) return;
      try { await api("DELETE", "/rules/" + r.id); reload(); } catch (e) { toast(e.message, "bad"); }
    } }, "Delete") : "")))))
    : h("p", { class: "muted" }, "No rules.");
  if (!admin) return table;
  // The editor: VMs by name (comma-separated), hosts by ticking them.
  const name = h("input", { id: "rule-name-" + cluster.id, required: true, maxlength: "64" });
  const kind = h("select", { id: "rule-kind-" + cluster.id }, Object.entries(KINDS).map(([k, l]) => h("option", { value: k }, l)));
  const vms = h("input", { id: "rule-vms-" + cluster.id, required: true, placeholder: "web-1, web-2", size: "40" });
  const hostBoxes = names.hostList.filter((x) => x.cluster_id === cluster.id).map((x) =>
    h("label", { class: "inline" }, h("input", { type: "checkbox", value: x.id }), x.name));
  const hostsField = h("fieldset", {}, h("legend", {}, "Hosts (for host rules)"), h("div", { class: "row" }, hostBoxes));
  const msg = h("div");
  const form = h("form", { onsubmit: async (e) => {
    e.preventDefault();
    msg.replaceChildren();
    try {
      await post(`/clusters/${cluster.id}/rules`, {
        name: name.value.trim(), kind: kind.value,
        vms: vms.value.split(",").map((s) => s.trim()).filter(Boolean),
        hosts: hostBoxes.map((l) => l.querySelector("input")).filter((i) => i.checked).map((i) => i.value),
      });
      toast("Rule created", "ok");
      reload();
    } catch (ex) { fill(msg, errorBox(ex)); }
  } },
  h("h3", {}, "New rule"),
  h("div", { class: "row" },
    h("label", { for: name.id }, "Name", name), h("label", { for: kind.id }, "Kind", kind),
    h("label", { for: vms.id }, "VMs (names, comma-separated)", vms)),
  hostsField, msg, h("button", { type: "submit", class: "primary" }, "Create rule"));
  return [table, form];
}

function stat(l, v) {
  return h("div", {}, h("span", { class: "l" }, l), h("span", { class: "v" }, v));
}
