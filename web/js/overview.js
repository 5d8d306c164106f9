// The cluster overview: totals, the balance metric, migrations in flight and a card
// per host; reloads itself from the event stream and every few seconds.

import { events, get, qs } from "./api.js";
import { badge, debounce, errorBox, fill, fmtMib, h, hostLink, meter, names, vmLink } from "./ui.js";

export async function render(main) {
  const totals = h("div", { class: "totals", "aria-live": "off" });
  const balance = h("div");
  const inflight = h("div");
  const hosts = h("div", { class: "grid", id: "host-cards" });
  const err = h("div");
  main.append(
    h("h1", {}, "Overview"),
    h("p", { class: "sub" }, "The fleet as it is now; updates live."),
    err,
    h("section", { class: "card", "aria-labelledby": "t-totals" }, h("h2", { id: "t-totals" }, "Cluster totals"), totals),
    h("div", { class: "cols" },
      h("section", { class: "card", "aria-labelledby": "t-bal" }, h("h2", { id: "t-bal" }, "Balance"), balance),
      h("section", { class: "card", "aria-labelledby": "t-mig" }, h("h2", { id: "t-mig" }, "Migrations in flight"), inflight)),
    h("section", { "aria-labelledby": "t-hosts" }, h("h2", { id: "t-hosts" }, "Hosts"), hosts),
  );

  let busy = false;
  const load = async () => {
    if (busy) return;
    busy = true;
    try {
      const [hostList, clusters, migs] = await Promise.all([
        names.loadHosts(), names.loadClusters(),
        get("/migrations" + qs({ active: true, limit: 50 })),
      ]);
      err.replaceChildren();
      const cores = hostList.reduce((a, x) => a + x.cpu.cores, 0);
      const mem = hostList.reduce((a, x) => a + x.memory.total_mib, 0);
      const free = hostList.reduce((a, x) => a + x.memory.free_mib, 0);
      const vmCount = clusters.reduce((a, c) => a + c.vm_count, 0);
      const connected = hostList.filter((x) => x.state === "connected").length;
      const stat = (n, l) => h("div", { class: "total" }, h("span", { class: "n" }, n), h("span", { class: "l" }, l));
      fill(totals,
        stat(hostList.length, `hosts (${connected} connected)`),
        stat(vmCount, "VMs"),
        stat(hostList.reduce((a, x) => a + x.vm_count, 0), "VMs on hosts"),
        stat(cores, "CPU cores"),
        stat(fmtMib(mem - free) + " / " + fmtMib(mem), "memory in use"),
        stat(migs.items.length, "migrations in flight"));

      const bal = await Promise.all(clusters.map((c) => get(`/clusters/${c.id}/drs`).then((d) => [c, d], () => [c, null])));
      fill(balance, bal.map(([c, d]) => h("div", { class: "meter-block" },
        h("h3", {}, c.name, " ", h("span", { class: "muted small" }, c.drs.automation.replaceAll("_", " "))),
        d ? [
          meter("Imbalance (combined)", Math.min(100, d.imbalance.combined * 100),
            d.imbalance.combined.toFixed(3) + (d.tolerance != null ? ` (tolerated ${d.tolerance.toFixed(3)})` : "")),
          h("p", { class: "small muted" }, `CPU ${d.imbalance.cpu.toFixed(3)} · memory ${d.imbalance.memory.toFixed(3)} · `,
            d.recommendations.filter((r) => r.state === "pending").length, " pending recommendations · ",
            h("a", { href: "#/balancing" }, "balancing")),
        ] : h("p", { class: "muted" }, "No balance figures."))));

      fill(inflight, migs.items.length ? h("ul", { class: "log" }, migs.items.map((m) => h("li", { class: "decisions" },
        h("span", {}, badge(m.state)),
        h("span", {}, vmLink(m.vm_id), " ", hostLink(m.source_host_id), " → ", hostLink(m.destination_host_id), " ",
          h("a", { href: "#/migrations/" + m.id }, `${Math.floor(m.progress.percent)}% · live view`)))))
        : h("p", { class: "muted" }, "None."));

      fill(hosts, [...hostList].sort((a, b) => a.name.localeCompare(b.name)).map(hostCard));
    } catch (e) {
      fill(err, errorBox(e));
    } finally {
      busy = false;
    }
  };
  const soon = debounce(load, 400);
  await load();
  const offEv = events.on((ev) => {
    if (/^(host|vm|migration|drs)\./.test(ev.kind) && ev.kind !== "migration.progress") soon();
  });
  const offSync = events.onResync(load);
  const timer = setInterval(load, 5000);
  return () => { offEv(); offSync(); clearInterval(timer); };
}

function hostCard(x) {
  const memUsed = x.memory.total_mib ? (100 * (x.memory.total_mib - x.memory.free_mib)) / x.memory.total_mib : 0;
  return h("article", { class: "card host-card", dataset: { host: x.name, state: x.state } },
    h("h3", {}, hostLink(x.id), badge(x.state)),
    h("p", { class: "small muted" }, `${x.accel.toUpperCase()} · ${x.cpu.cores} cores · ${x.vm_count} VMs · ${x.address}`),
    meter("CPU", x.load.cpu_pct),
    meter("Memory", memUsed, `${fmtMib(x.memory.total_mib - x.memory.free_mib)} of ${fmtMib(x.memory.total_mib)}`),
    x.state === "entering_maintenance" || x.state === "maintenance"
      ? h("p", { class: "small" }, h("a", { href: "#/hosts/" + x.id }, "Maintenance: " + x.state.replaceAll("_", " ")))
      : null);
}

