// Time-series charts on uPlot (vendored from the npm registry by `make web`; see
// web/package.json). Colours come from the page's theme.

const PALETTE = ["--primary", "--warn", "--ok", "--bad"];

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}

/**
 * A line chart of time series in `el`. `series`: [{label, value: (v) => text}];
 * `yValue` formats the axis. Returns {push(tSeconds, ...values), set(xs, ...ys), destroy()}.
 */
export function lineChart(el, { series, yValue = (v) => String(v), height = 220, title }) {
  const data = [[], ...series.map(() => [])];
  const axisColor = cssVar("--muted");
  const grid = { stroke: cssVar("--line"), width: 1 };
  const opts = {
    title,
    width: Math.max(300, el.clientWidth || 600),
    height,
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true } },
    axes: [
      { stroke: axisColor, grid, ticks: grid },
      { stroke: axisColor, grid, ticks: grid, size: 96, values: (u, vals) => vals.map(yValue) },
    ],
    series: [
      {},
      ...series.map((s, i) => ({
        label: s.label,
        stroke: cssVar(s.color || PALETTE[i % PALETTE.length]),
        width: 2,
        points: { show: false },
        value: (u, v) => (v === null || v === undefined ? "—" : (s.value || yValue)(v)),
      })),
    ],
  };
  if (typeof uPlot === "undefined") {
    el.textContent = "(charts unavailable: uPlot did not load)";
    return { push() {}, set() {}, destroy() {} };
  }
  const plot = new uPlot(opts, data, el);
  const ro = new ResizeObserver(() => plot.setSize({ width: Math.max(300, el.clientWidth), height }));
  ro.observe(el);
  return {
    push(t, ...values) {
      data[0].push(t);
      values.forEach((v, i) => data[i + 1].push(v));
      plot.setData(data);
    },
    set(xs, ...ys) {
      data.splice(0, data.length, xs, ...ys);
      plot.setData(data);
    },
    destroy() { ro.disconnect(); plot.destroy(); },
  };
}
