// A small inline-SVG chart of an export's recent runs: a bar per run, contacts exported (green) with
// those failed (red) on top, and a dot for how long it took. No library: a few SVG elements.

import { FINAL, fmtDuration, fmtNumber, fmtSeconds, fmtTime } from "./common.js";

const SVG = "http://www.w3.org/2000/svg";
const W = 168;
const H = 44;
const BARS_H = 30; // the bars' area; the durations' dots sit above it, in their own scale
const MAX_RUNS = 12;

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c);
  return el;
}

function seconds(run) {
  if (!run.startedAt || !run.finishedAt) return 0;
  return Math.max(0, (new Date(run.finishedAt) - new Date(run.startedAt)) / 1000);
}


// The runs charted: ended ones (not previews), oldest first, at most MAX_RUNS.
export function chartedRuns(runs) {
  return runs.filter((r) => FINAL.has(r.status) && r.kind !== "preview").slice(0, MAX_RUNS).reverse();
}


export function runsChart(exportName, runs) {
  const shown = chartedRuns(runs);
  const most = Math.max(1, ...shown.map((r) => r.counts.confirmed + r.counts.failed));
  const longest = Math.max(0, ...shown.map(seconds));
  const slot = W / MAX_RUNS;
  const exported = shown.reduce((n, r) => n + r.counts.confirmed, 0);
  const failed = shown.reduce((n, r) => n + r.counts.failed, 0);
  const label = shown.length
    ? `Last ${shown.length} run${shown.length === 1 ? "" : "s"} of ${exportName}: ${fmtNumber(exported)} contacts exported, ` +
      `${fmtNumber(failed)} failed, the longest took ${fmtSeconds(longest)}`
    : `${exportName} has no ended runs yet`;
  const chart = svg("svg", { class: "runs-chart", width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label });
  chart.append(svg("title", {}, label));
  chart.append(svg("line", { class: "axis", x1: 0, x2: W, y1: H - 0.5, y2: H - 0.5 }));
  const dots = [];
  shown.forEach((run, i) => {
    const c = run.counts;
    const x = W - (shown.length - i) * slot + 1;
    const w = slot - 2;
    const hOk = (BARS_H * c.confirmed) / most;
    const hBad = (BARS_H * c.failed) / most;
    const g = svg("g", { class: "run", "data-run-id": run.runId });
    g.append(svg("title", {}, `${fmtTime(run.finishedAt || run.startedAt)}: ${fmtNumber(c.confirmed)} exported, ` +
      `${fmtNumber(c.failed)} failed, took ${fmtDuration(run)}`));
    g.append(svg("rect", { class: "bar-exported", x, y: H - 1 - hOk, width: w, height: hOk }));
    g.append(svg("rect", { class: "bar-failed", x, y: H - 1 - hOk - hBad, width: w, height: hBad }));
    if (!c.confirmed && !c.failed) g.append(svg("rect", { class: "bar-none", x, y: H - 3, width: w, height: 2 }));
    chart.append(g);
    dots.push([x + w / 2, H - BARS_H - 2 - ((H - BARS_H - 6) * seconds(run)) / Math.max(longest, 1)]);
  });
  if (dots.length > 1) chart.append(svg("polyline", { class: "duration-line", points: dots.map((p) => p.join(",")).join(" ") }));
  for (const [cx, cy] of dots) chart.append(svg("circle", { class: "duration", cx, cy, r: 1.8 }));
  return chart;
}
