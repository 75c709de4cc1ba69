// The exports list's columns about runs: when the schedule looks next, each export's last run, and a
// small chart of its recent runs. Filled in after the list is drawn, one runs list per export.

import { current, fmtNumber, fmtTime, h, state } from "./common.js";
import { runsChart } from "./chart.js";
import { outcome } from "./progress.js";

export function nextCheck(x, schedule) {
  if (!x.enabled) return h("span", { title: x.disabledReason || "" }, "Disabled: not checked");
  if (!schedule || !schedule.nextCheckAt) return h("span", { class: "hint" }, "No timer in this app: Run now only");
  return [fmtTime(schedule.nextCheckAt), h("div", { class: "hint" }, "runs if a new refresh is there")];
}


const SUMMARY_FETCHES = 4; // runs lists asked for at once: a long list of exports does not flood the app

export async function fillRunSummaries(listBox, exports, view) {
  const queue = exports.slice();
  const next = async () => {
    for (let x = queue.shift(); x; x = queue.shift()) {
      let runs;
      try {
        runs = (await state.api.get(`exports/${encodeURIComponent(x.id)}/runs`)).runs;
      } catch (err) {
        if (!current(view)) return;
        const cell = listBox.querySelector(`tr[data-export-id="${CSS.escape(x.id)}"] td.last-run`);
        if (cell) cell.replaceChildren(h("span", { class: "hint" }, err.detail || "The runs could not be read."));
        continue;
      }
      if (!current(view)) return;
      const row = listBox.querySelector(`tr[data-export-id="${CSS.escape(x.id)}"]`);
      if (!row) continue;
      row.querySelector("td.last-run").replaceChildren(lastRun(runs));
      row.querySelector("td.chart").replaceChildren(runsChart(x.name, runs), chartKey());
    }
  };
  await Promise.all(Array.from({ length: SUMMARY_FETCHES }, next));
}


// what the chart's colours and dots mean, in words beside them
function chartKey() {
  return h("p", { class: "chart-key", "aria-hidden": "true" },
    h("span", { class: "k k-confirmed" }, "exported"), " ", h("span", { class: "k k-failed" }, "failed"), " ",
    h("span", { class: "k k-duration" }, "duration"));
}


function lastRun(runs) {
  const run = runs.find((r) => r.kind !== "preview");
  if (!run) return h("span", { class: "hint" }, "No runs yet");
  const said = outcome(run);
  const c = run.counts;
  return h("div", { class: "last-run-summary", dataset: { runId: run.runId, status: run.status } },
    h("span", { class: `status tone-${said.tone}`, title: `status: ${run.status}` }, said.text),
    h("div", { class: "hint" }, fmtTime(run.finishedAt || run.startedAt || run.createdAt)),
    h("div", { class: "hint" }, `${fmtNumber(c.confirmed)} exported · ${fmtNumber(c.failed)} failed`));
}
