// The runs of an export: what happened (in words), the bar in parts, the pace and time left while a
// run goes, where every member went, Retry and Cancel, and the reports to download.

import { FINAL, POLL_MS, busy, clearProblem, current, fmtDuration, fmtNumber, fmtTime, h, plural, showProblem, state } from "./common.js";
import { barParts, fmtLeft, outcome, pace, phase, secondsLeft } from "./progress.js";

// --- runs -------------------------------------------------------------------------------------

// the run ended and every batch is accounted for: its counts no longer change
function settled(run) {
  return FINAL.has(run.status) && run.countsFinal;
}

// what the page saw of each running run, [time, contacts counted], for its pace
const samples = new Map();
const SAMPLE_KEEP_MS = 120000;

function sample(run, nowMs) {
  if (FINAL.has(run.status)) { samples.delete(run.runId); return []; }
  const { confirmed, failed } = barParts(run);
  const seen = (samples.get(run.runId) || []).filter(([t]) => t >= nowMs - SAMPLE_KEEP_MS);
  seen.push([nowMs, confirmed + failed]);
  samples.set(run.runId, seen);
  return seen;
}


// showPreview(runId): opens a preview's panel (the export's page gives it; the runs offer it on previews)
export async function loadRuns(section, problemBox, exportId, view, showPreview = null) {
  let data;
  try {
    data = await state.api.get(`exports/${encodeURIComponent(exportId)}/runs`);
  } catch (err) {
    if (current(view)) showProblem(problemBox, err);
    return;
  }
  if (!current(view)) return;
  clearProblem(problemBox);
  const reload = () => loadRuns(section, problemBox, exportId, view, showPreview);
  renderRuns(section.querySelector("#run-list"), data.runs, data.requestBudget || null,
    { problem: problemBox, notice: noticeBox(section), showPreview }, reload);
  const active = data.runs.some((r) => !settled(r));
  if (active && !state.poll) {
    state.poll = setInterval(() => {
      if (!current(view)) { clearInterval(state.poll); state.poll = null; return; }
      reload();
    }, POLL_MS);
  } else if (!active && state.poll) {
    clearInterval(state.poll);
    state.poll = null;
  }
}


// where the answer of a Retry is said (the section's own, above the list)
function noticeBox(section) {
  let box = section.querySelector("#run-notice");
  if (!box) {
    box = h("div", { id: "run-notice", class: "notice", role: "status", hidden: true });
    section.querySelector("#run-list").before(box);
  }
  return box;
}


// The bar in parts, with the numbers beside it: text carries what the colours show.
export function runBar(run) {
  if (run.kind === "preview") return previewBar(run);
  const p = barParts(run);
  const pct = (n) => (p.queued ? (100 * n) / p.queued : 0);
  const wrap = h("div", { class: "runbar-wrap" });
  if (p.queued > 0) {
    const label = `${fmtNumber(p.confirmed)} confirmed, ${fmtNumber(p.failed)} failed, ${fmtNumber(p.unknown)} not yet known, of ${fmtNumber(p.queued)} sent`;
    const bar = h("div", { class: "runbar", role: "img", "aria-label": `Run ${run.runId}: ${label}` });
    for (const [part, n] of [["confirmed", p.confirmed], ["failed", p.failed], ["unknown", p.unknown]]) {
      const seg = h("span", { class: `seg seg-${part}`, dataset: { part, count: String(n) } });
      seg.style.width = `${pct(n)}%`; // the CSSOM, which the page's CSP allows (a style attribute it would not)
      bar.append(seg);
    }
    wrap.append(bar, h("div", { class: "runbar-text" },
      h("span", { class: "k k-confirmed" }, `${fmtNumber(p.confirmed)} confirmed`), " · ",
      h("span", { class: "k k-failed" }, `${fmtNumber(p.failed)} failed`), " · ",
      h("span", { class: "k k-unknown" }, `${fmtNumber(p.unknown)} not yet known`),
      h("span", { class: "of" }, ` of ${fmtNumber(p.queued)}`)));
  } else {
    const text = FINAL.has(run.status) ? (run.counts.skipped ? "nothing changed to send" : "nothing to send") : "reading the segment";
    wrap.append(h("div", { class: `runbar ${FINAL.has(run.status) ? "runbar-empty" : "runbar-waiting"}`, role: "img", "aria-label": `Run ${run.runId}: ${text}` }),
      h("div", { class: "runbar-text" }, text));
  }
  return wrap;
}


// A preview confirmed nothing and failed nothing: an empty bar, hatched, that says what a run would send.
function previewBar(run) {
  const c = run.counts;
  const text = !FINAL.has(run.status) ? "reading the segment"
    : `${c.queued > 0 ? `would send ${fmtNumber(c.queued)}` : "nothing would be sent"} · nothing sent`;
  return h("div", { class: "runbar-wrap" },
    h("div", { class: "runbar runbar-preview", role: "img", "aria-label": `Preview ${run.runId}: ${text}` }),
    h("div", { class: "runbar-text" }, text));
}


// While a run goes: its phase, contacts a minute and the time left.
function liveLine(run, budget, seen, nowMs) {
  const doing = phase(run);
  if (!doing) return null;
  const perMinute = pace(run, seen, nowMs);
  const left = secondsLeft(run, budget, perMinute);
  const parts = [h("span", { class: "phase", dataset: { phase: doing } }, doing[0].toUpperCase() + doing.slice(1))];
  const c = run.counts;
  if (doing === "tagging members") {
    const toTag = Math.max(0, c.queued - c.failed - (c.alreadyTagged || 0));
    parts.push(" · ", h("span", { class: "tagging" }, `${fmtNumber(c.tagged)} of ${fmtNumber(toTag)} tagged` +
      (c.left ? `, ${fmtNumber(c.untagged)} of ${fmtNumber(c.left)} untagged` : "")));
  } else if (run.status === "uploading" || run.status === "verifying") {
    parts.push(" · ", h("span", { class: "pace" }, perMinute === null ? "measuring the pace" : `${fmtNumber(Math.round(perMinute))} contacts a minute`));
  }
  if (left !== null) {
    // without a pace yet, the budget only says how long the rest takes at least
    const text = perMinute !== null || doing === "tagging members" ? fmtLeft(left)
      : left >= 60 ? `at least ${fmtLeft(left).replace(/^about /, "")}` : "estimating the time left";
    parts.push(" · ", h("span", { class: "eta", dataset: { seconds: String(Math.round(left)) } }, text));
  }
  return h("p", { class: "live" }, parts);
}


// Where the members went: joined, changed, left (tag removed), unchanged, tagged. Joined and changed
// come apart where the API counted them; a run recorded before it did (both 0 while contacts were
// queued) shows one number: sent (new or changed).
function memberFacts(run) {
  const c = run.counts;
  const fact = (key, label, n, extra) => h("li", { dataset: { count: key } },
    h("span", { class: "fact-label" }, label), " ", h("span", { class: "fact-value" }, fmtNumber(n)), extra || null);
  if (run.kind === "preview") return previewFacts(run, fact);
  const items = [];
  const counted = c.joined !== undefined && c.changed !== undefined && (c.joined + c.changed > 0 || c.queued === 0);
  if (counted) {
    items.push(fact("joined", "Joined", c.joined), fact("changed", "Changed", c.changed));
  } else {
    items.push(fact("sent", "Sent (new or changed)", c.queued));
  }
  items.push(
    fact("left", "Left", c.left, c.left ? h("span", { class: "fact-extra" }, ` (tag removed from ${fmtNumber(c.untagged)})`) : null),
    fact("unchanged", "Unchanged", c.skipped),
    fact("tagged", "Tagged", c.tagged, c.alreadyTagged ? h("span", { class: "fact-extra" }, ` (${fmtNumber(c.alreadyTagged)} had it already)`) : null),
    fact("duplicates", "Duplicates", c.duplicates));
  return h("ul", { class: "facts", "aria-label": `Members of run ${run.runId}` }, items);
}


// A preview's members as what a run would do with them (nothing was tagged or untagged).
function previewFacts(run, fact) {
  const c = run.counts;
  const p = run.preview || {};
  const extra = (text) => h("span", { class: "fact-extra" }, text);
  return h("ul", { class: "facts", "aria-label": `What run ${run.runId} found a run would do` },
    fact("joined", "Would join", c.joined || 0), fact("changed", "Would change", c.changed || 0),
    fact("left", "Would leave", c.left, p.tagRemovals ? extra(` (tag removed from ${fmtNumber(p.tagRemovals)})`) : null),
    fact("unchanged", "Unchanged", c.skipped),
    fact("tagged", "Would be tagged", p.tagAdditions || 0),
    fact("duplicates", "Duplicates", c.duplicates));
}


function downloadLink(run, { path, label, name, fallback, problem }) {
  const link = h("a", { href: `../${path}`, class: "download", "aria-label": `${label} of run ${run.runId} (CSV)` }, `${label} (CSV)`);
  link.dataset.report = name;
  link.addEventListener("click", (ev) => { ev.preventDefault(); download(path, fallback, problem); });
  return link;
}


// The rejected and failed rows, once the run ended with any.
function rejectsLink(run, problem) {
  const c = run.counts;
  if (!FINAL.has(run.status) || c.rejected + c.duplicates + c.failed === 0) return null;
  return downloadLink(run, { path: `runs/${encodeURIComponent(run.runId)}/rejects`, label: "Download the rejected rows",
    name: "rejects", fallback: `run-${run.runId}-rejects.csv`, problem });
}


// The membership changes (email, joined / changed / left), when the API has a report of them.
export function changesLink(run, problem) {
  if (!run.changesUrl) return null;
  const path = run.changesUrl.replace(/^\/?api\//, "");  // absolute as the API gives it, or relative
  return downloadLink(run, { path, label: "Membership changes", name: "changes",
    fallback: `run-${run.runId}-changes.csv`, problem });
}


function actionButtons(run, newest, ui, reload) {
  const actions = [];
  const act = (label, aria, cls, send) => {
    const b = h("button", { type: "button", class: cls, "aria-label": aria }, label);
    b.addEventListener("click", async () => {
      clearProblem(ui.problem);
      ui.notice.hidden = true;
      busy(b, true);
      try { await send(); } catch (err) { showProblem(ui.problem, err); }
      await reload();
    });
    actions.push(b);
  };
  const id = encodeURIComponent(run.runId);
  if (!FINAL.has(run.status)) {
    const what = run.kind === "preview" ? "preview" : "run"; // a preview can be stopped while it plans
    act("Cancel", `Cancel ${what} ${run.runId}`, "danger", () => state.api.post(`runs/${id}/cancel`));
  }
  if (run.retryable) {
    act("Retry", `Retry the failed contacts of run ${run.runId}`, null, async () => {
      const res = await state.api.post(`runs/${id}/retry`);
      ui.notice.replaceChildren(h("p", {}, res.batchesResent
        ? `Run ${run.runId}: ${plural(res.batchesResent, "batch", "batches")} of failed contacts sent again.`
        : `Run ${run.runId}: nothing to send again; the failures left are Omnisend's own answers or were never in a batch (see the report).`));
      ui.notice.hidden = false;
    });
  }
  if (run.kind === "preview" && FINAL.has(run.status) && run.preview && ui.showPreview) {
    const b = h("button", { type: "button", "aria-label": `Show preview ${run.runId}` }, "Show preview");
    b.addEventListener("click", () => ui.showPreview(run.runId));
    actions.push(b);
  }
  if (newest && run.heldByThreshold) { // the newest run stopped at a safety threshold: send that refresh anyway
    act("Run anyway", `Run anyway: send the refresh that run ${run.runId} held`, null,
      () => state.api.send("POST", `exports/${encodeURIComponent(run.exportId)}/runs`, { query: { confirm: "true" } }));
  }
  return actions;
}

const HEAD = ["Started", "Outcome", "Progress", "Read", "Exported", "Rejected", "Failed", "Duration", "Actions"];

// Exported and failed: a preview sent nothing, so it has neither (a dash, not a 0 that reads as a result).
function sentNum(run, key) {
  if (run.kind !== "preview") return h("td", { class: "num", dataset: { count: key } }, fmtNumber(run.counts[key]));
  return h("td", { class: "num none", dataset: { count: key }, title: "a preview sends nothing" },
    h("span", { "aria-hidden": "true" }, "—"), h("span", { class: "visually-hidden" }, "none: a preview sends nothing"));
}


function runRows(run, newest, budget, ui, reload, nowMs) {
  const c = run.counts;
  const said = outcome(run);
  const num = (v, key) => h("td", { class: "num", dataset: { count: key } }, fmtNumber(v));
  const main = h("tr", { dataset: { runId: run.runId, status: run.status, ...(run.kind ? { kind: run.kind } : {}) } },
    h("td", { class: "started" }, fmtTime(run.startedAt || run.createdAt),
      h("div", { class: "hint" }, run.kind === "preview" ? "Preview: nothing sent" : run.trigger === "schedule" ? "by the schedule" : "Run now")),
    h("td", { class: "outcome" }, h("span", { class: `status tone-${said.tone}`, title: `status: ${run.status}` }, said.text),
      run.stuck ? h("div", { class: "hint" }, `Stuck: ${run.stuck}`) : null,
      FINAL.has(run.status) && !run.countsFinal ? h("div", { class: "hint" }, "Counts still changing: batches in flight are being accounted for") : null),
    h("td", { class: "progress" }, runBar(run)),
    num(c.read, "read"), sentNum(run, "confirmed"), num(c.rejected, "rejected"), sentNum(run, "failed"),
    h("td", { class: "num" }, fmtDuration(run)),
    h("td", { class: "actions" }, actionButtons(run, newest, ui, reload)));
  const reasons = [
    ...Object.entries(c.rejectedByReason || {}).map(([r, n]) => `rejected, ${r}: ${fmtNumber(n)}`),
    ...Object.entries(c.failedByReason || {}).map(([r, n]) => `failed, ${r}: ${fmtNumber(n)}`),
  ];
  const reports = [rejectsLink(run, ui.problem), changesLink(run, ui.problem)].filter(Boolean);
  const details = h("tr", { class: "run-details", dataset: { detailsOf: run.runId } }, h("td", { colspan: String(HEAD.length) },
    liveLine(run, budget, sample(run, nowMs), nowMs),
    run.error ? h("p", { class: "run-error" }, run.error) : null,
    memberFacts(run),
    reasons.length ? h("p", { class: "hint reasons" }, reasons.join(" · ")) : null,
    reports.length ? h("p", { class: "reports" }, h("span", { class: "fact-label" }, "Reports:"), " ",
      reports.flatMap((a, i) => (i ? [" · ", a] : [a]))) : null));
  return [main, details];
}


function renderRuns(box, runs, budget, ui, reload) {
  if (!runs.length) {
    box.replaceChildren(h("p", {}, "No runs yet. Saving never runs an export: choose Run now, or wait for the schedule."));
    return;
  }
  const nowMs = Date.now();
  const newest = runs.find((r) => r.kind !== "preview"); // Run anyway belongs to the newest real run
  const rows = runs.flatMap((run) => runRows(run, run === newest, budget, ui, reload, nowMs));
  box.replaceChildren(h("table", { class: "grid runs" },
    h("caption", { class: "visually-hidden" }, "Run history, newest first"),
    h("thead", {}, h("tr", {}, HEAD.map((t) => h("th", { scope: "col" }, t === "Actions" ? h("span", { class: "visually-hidden" }, t) : t)))),
    h("tbody", {}, rows)));
}


async function download(path, fallbackName, problemBox) {
  try {
    const { blob, filename } = await state.api.download(path, fallbackName);
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
