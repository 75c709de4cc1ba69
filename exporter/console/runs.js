// The runs of an export: status, progress, counts, and the report of rows that did not arrive.

import { FINAL, POLL_MS, STATUS_TEXT, busy, clearProblem, current, fmtDuration, fmtNumber, fmtTime, h, showProblem, state } from "./common.js";

// --- runs -------------------------------------------------------------------------------------

// the run ended and every batch is accounted for: its counts no longer change
function settled(run) {
  return FINAL.has(run.status) && run.countsFinal;
}


export async function loadRuns(section, problemBox, exportId, view) {
  let data;
  try {
    data = await state.api.get(`exports/${encodeURIComponent(exportId)}/runs`);
  } catch (err) {
    if (current(view)) showProblem(problemBox, err);
    return;
  }
  if (!current(view)) return;
  clearProblem(problemBox);
  renderRuns(section.querySelector("#run-list"), data.runs, problemBox, () => loadRuns(section, problemBox, exportId, view));
  const active = data.runs.some((r) => !settled(r));
  if (active && !state.poll) {
    state.poll = setInterval(() => {
      if (!current(view)) { clearInterval(state.poll); state.poll = null; return; }
      loadRuns(section, problemBox, exportId, view);
    }, POLL_MS);
  } else if (!active && state.poll) {
    clearInterval(state.poll);
    state.poll = null;
  }
}


function progressCell(run) {
  const c = run.counts;
  const done = c.confirmed + c.failed;
  const bar = h("progress", { "aria-label": `Progress of run ${run.runId}` });
  let text;
  if (c.queued > 0) {
    bar.max = c.queued;
    bar.value = Math.min(done, c.queued);
    text = `${fmtNumber(done)} of ${fmtNumber(c.queued)} (${Math.floor((100 * done) / c.queued)}%)`;
  } else if (FINAL.has(run.status)) {
    bar.max = 1;
    bar.value = 1;
    text = c.skipped ? "nothing changed to send" : "nothing to send";
  } else {
    text = "reading the segment"; // no value: an indeterminate bar
  }
  return h("td", { class: "progress" }, bar, h("span", { class: "progress-text" }, text));
}


function renderRuns(box, runs, problemBox, reload) {
  if (!runs.length) {
    box.replaceChildren(h("p", {}, "No runs yet. Saving never runs an export: choose Run now, or wait for the schedule."));
    return;
  }
  const head = ["Started", "Status", "Progress", "Read", "Exported", "Rejected", "Duplicates", "Failed", "Skipped", "Duration", "Rejected rows", "Actions"];
  const rows = [];
  for (const [i, run] of runs.entries()) {
    const c = run.counts;
    const report = h("td", {});
    if (FINAL.has(run.status) && c.rejected + c.duplicates + c.failed > 0) {
      const link = h("a", { href: `../runs/${encodeURIComponent(run.runId)}/rejects`, class: "download",
        "aria-label": `Download the rejected rows of run ${run.runId} (CSV)` }, "Download CSV");
      link.addEventListener("click", (ev) => { ev.preventDefault(); downloadRejects(run, problemBox); });
      report.append(link);
    } else {
      report.append(FINAL.has(run.status) ? "none" : "");
    }
    const actions = h("td", {});
    if (!FINAL.has(run.status)) {
      const cancel = h("button", { type: "button", class: "danger", "aria-label": `Cancel run ${run.runId}` }, "Cancel");
      cancel.addEventListener("click", async () => {
        busy(cancel, true);
        try { await state.api.post(`runs/${encodeURIComponent(run.runId)}/cancel`); } catch (err) { showProblem(problemBox, err); }
        await reload();
      });
      actions.append(cancel);
    }
    if (i === 0 && run.heldByThreshold) { // the newest run stopped at a safety threshold: send that refresh anyway
      const anyway = h("button", { type: "button", "aria-label": `Run anyway: send the refresh that run ${run.runId} held` }, "Run anyway");
      anyway.addEventListener("click", async () => {
        busy(anyway, true);
        try {
          await state.api.send("POST", `exports/${encodeURIComponent(run.exportId)}/runs`, { query: { confirm: "true" } });
        } catch (err) { showProblem(problemBox, err); }
        await reload();
      });
      actions.append(anyway);
    }
    const num = (v) => h("td", { class: "num" }, fmtNumber(v));
    rows.push(h("tr", { dataset: { runId: run.runId, status: run.status } },
      h("td", { class: "started" }, fmtTime(run.startedAt || run.createdAt),
        h("div", { class: "hint" }, run.trigger === "schedule" ? "by the schedule" : "Run now")),
      h("td", {}, h("span", { class: `status status-${run.status}` }, STATUS_TEXT[run.status] || run.status),
        run.stuck ? h("div", { class: "hint" }, `Stuck: ${run.stuck}`) : null,
        FINAL.has(run.status) && !run.countsFinal ? h("div", { class: "hint" }, "Counts still changing: batches in flight are being accounted for") : null),
      progressCell(run),
      num(c.read), num(c.confirmed), num(c.rejected), num(c.duplicates), num(c.failed), num(c.skipped),
      h("td", { class: "num" }, fmtDuration(run)),
      report, actions));
    const reasons = [
      ...Object.entries(c.rejectedByReason || {}).map(([r, n]) => `rejected, ${r}: ${fmtNumber(n)}`),
      ...Object.entries(c.failedByReason || {}).map(([r, n]) => `failed, ${r}: ${fmtNumber(n)}`),
    ];
    if (run.error || reasons.length) {
      rows.push(h("tr", { class: "run-details" }, h("td", { colspan: String(head.length) },
        run.error ? h("p", { class: "run-error" }, run.error) : null,
        reasons.length ? h("p", { class: "hint" }, reasons.join(" · ")) : null)));
    }
  }
  box.replaceChildren(h("table", { class: "grid runs" },
    h("caption", { class: "visually-hidden" }, "Run history, newest first"),
    h("thead", {}, h("tr", {}, head.map((t) => h("th", { scope: "col" }, t === "Actions" ? h("span", { class: "visually-hidden" }, t) : t)))),
    h("tbody", {}, rows)));
}


async function downloadRejects(run, problemBox) {
  try {
    const { blob, filename } = await state.api.download(`runs/${encodeURIComponent(run.runId)}/rejects`, `run-${run.runId}-rejects.csv`);
    const url = URL.createObjectURL(blob);
    const a = h("a", { href: url, download: filename, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (err) {
    showProblem(problemBox, err);
  }
}
