// A preview (POST /exports/{id}/runs?dryRun=true): what a run of the export would do now, planned for
// real and sent nowhere. The panel says it in words from GET /runs/{id}, the one answer that carries
// the sample of contacts; the run history lists the preview beside the real runs.

import { ATTRIBUTES, ATTRIBUTE_LABEL, FINAL, POLL_MS, alertBox, current, fmtNumber, fmtTime, h, showProblem, state } from "./common.js";
import { fmtAbout } from "./progress.js";
import { changesLink } from "./runs.js";

export function startPreview(exportId) {
  return state.api.post(`exports/${encodeURIComponent(exportId)}/runs`, undefined, { dryRun: "true" });
}


const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

// The panel of one preview at a time: show(runId) asks for the run until it ended, then draws it.
export function previewPanel(view) {
  const said = h("p", { class: "visually-hidden", role: "status" }); // stays, so what it says is announced
  const body = h("div", { class: "preview-body" });
  const box = h("section", { id: "preview-panel", class: "card preview", "aria-labelledby": "preview-h", hidden: true },
    said, body);
  let shown = null;
  const close = () => { shown = null; box.hidden = true; body.replaceChildren(); };

  const show = async (runId, { focus = false } = {}) => {
    shown = runId;
    box.hidden = false;
    body.replaceChildren(heading(runId, close), h("p", { class: "loading" }, "Reading the segment; nothing is sent…"));
    said.textContent = `Preview ${runId}: reading the segment.`;
    if (focus) box.querySelector("h3").focus();
    for (;;) {
      let run;
      try {
        run = await state.api.get(`runs/${encodeURIComponent(runId)}`);
      } catch (err) {
        if (shown !== runId || !current(view)) return;
        const problem = alertBox();
        body.append(problem);
        showProblem(problem, err);
        return;
      }
      if (shown !== runId || !current(view)) return;
      if (FINAL.has(run.status)) {
        const problem = alertBox();
        body.replaceChildren(heading(runId, close), ...contents(run, problem), problem);
        said.textContent = summary(run);
        if (focus) box.querySelector("h3").focus();
        return;
      }
      await sleep(POLL_MS);
    }
  };
  return { element: box, show };
}


function heading(runId, close) {
  const closer = h("button", { type: "button", class: "link", "aria-label": `Close preview ${runId}` }, "Close");
  closer.addEventListener("click", close);
  return h("div", { class: "preview-head" }, h("h3", { id: "preview-h", tabindex: "-1" }, `Preview ${runId}: what a run would do`), closer);
}


function summary(run) {
  if (run.status !== "succeeded") return `Preview ${run.runId} ${run.status === "cancelled" ? "was cancelled" : "failed"}.`;
  const stop = run.preview && run.preview.wouldStop ? " A run would stop before sending." : "";
  return `Preview ${run.runId} planned: a run would send ${fmtNumber(run.counts.queued)} contacts.${stop}`;
}


function contents(run, problem) {
  const where = run.refresh ? ` from refresh ${run.refresh.folder}` : "";
  const lead = h("p", { class: "preview-lead" }, `Planned ${fmtTime(run.finishedAt)}${where}. Nothing was sent to Omnisend ` +
    "and no membership state was written: a run of the same refresh would start with these numbers.");
  const changes = changesLink(run, problem);
  const reports = changes ? h("p", { class: "reports" }, h("span", { class: "fact-label" }, "Report:"), " ", changes) : null;
  if (run.status !== "succeeded" || !run.preview) {
    return [lead, h("p", { class: "run-error" }, run.error || `The preview ended ${run.status}.`), reports];
  }
  const p = run.preview;
  return [lead, wouldStop(p), countsTable(run), tagChanges(p, run.counts.left), estimateLine(p.estimate), reports, sampleOf(p.sample || [])];
}


function wouldStop(p) {
  return p.wouldStop
    ? h("p", { class: "would-stop tone-warn", dataset: { wouldStop: "yes" } }, `A run would stop before sending: ${p.wouldStop}`)
    : h("p", { class: "would-stop tone-ok", dataset: { wouldStop: "no" } }, "No safety threshold or contract limit would stop a run.");
}


const byKey = (counts) => Object.entries(counts || {}).map(([k, n]) => `${k}: ${fmtNumber(n)}`).join(" · ");

// The counts a run would start with, each with what it is made of.
function countsTable(run) {
  const c = run.counts;
  const p = run.preview;
  const rows = [
    ["read", "Rows read", c.read, ""],
    ["rejected", "Rejected", c.rejected, byKey(c.rejectedByReason)],
    ["duplicates", "Duplicates (an email seen again)", c.duplicates, ""],
    ["queued", "Would be sent", c.queued, "joined and changed"],
    ["joined", "Joined (new members)", c.joined || 0, ""],
    ["changed", "Changed", c.changed || 0, byKey(c.changedFields)],
    ["skipped", "Unchanged (not sent)", c.skipped, ""],
    ["left", "Leaving the segment", c.left, p.tagRemoved ? `lose the tag "${p.tagRemoved}"` : ""],
  ];
  return h("table", { class: "grid preview-counts" },
    h("caption", {}, "What a run would start with"),
    h("tbody", {}, rows.map(([key, label, n, detail]) => h("tr", { dataset: { count: key }, class: key === "joined" || key === "changed" ? "part" : null },
      h("th", { scope: "row" }, label), h("td", { class: "num" }, fmtNumber(n)), h("td", { class: "detail" }, detail)))));
}


function tagChanges(p, left) {
  let removed;
  if (p.tagRemoved) removed = `Tag "${p.tagRemoved}" removed from ${fmtNumber(p.tagRemovals)} members who leave`;
  else if (left > 0) removed = `No tag removed: the ${fmtNumber(left)} members who leave hold no tag of this export`;
  else removed = "No tag removed: nobody leaves";
  const items = [
    p.tag ? h("li", { dataset: { tag: "added" } }, `Tag "${p.tag}" added to ${fmtNumber(p.tagAdditions)} members`)
      : h("li", { dataset: { tag: "added" } }, "No tag added: the export has no membership tag"),
    h("li", { dataset: { tag: "removed" } }, removed),
  ];
  return h("ul", { class: "preview-tags", "aria-label": "Tag changes" }, items);
}


// How long the run would take at the connection's request budget, in words and then what it counts.
function estimateLine(e) {
  const detail = `${fmtNumber(e.contactRequests)} contact requests (${fmtNumber(e.contactBatches)} batches) and ` +
    `${fmtNumber(e.tagCalls)} tag calls, at ${fmtNumber(e.requestsPerWindow)} requests and ${fmtNumber(e.tagCallsPerWindow)} ` +
    `tag calls per ${e.windowSeconds} s, after ${e.planningSeconds} s of planning`;
  return h("p", { class: "estimate", dataset: { seconds: String(e.seconds) } },
    h("span", { class: "fact-label" }, "Estimated duration: "), h("strong", {}, fmtAbout(e.seconds)), `: ${detail}.`);
}


const STATUS_WORDS = { subscribed: "subscribed", unsubscribed: "unsubscribed", nonSubscribed: "not subscribed" };
const FIELD_LABEL = { ...ATTRIBUTE_LABEL, countryCode: "Country/region" };
// the form's order; a two-letter country goes as countryCode
const FIELD_ORDER = ATTRIBUTES.flatMap(([k]) => (k === "country" ? ["countryCode", k] : [k]));

// The fields the sample's contacts carry besides their identifiers, in the form's order.
function sampleFields(sample) {
  const seen = new Set(sample.flatMap((x) => Object.keys(x)).filter((k) => k !== "identifiers"));
  return [...FIELD_ORDER.filter((k) => seen.has(k)), ...[...seen].filter((k) => !FIELD_ORDER.includes(k)).sort()];
}


// The first contacts exactly as POST /batches would carry them: a table, and the JSON itself.
function sampleOf(sample) {
  const title = h("h4", {}, `The first ${fmtNumber(sample.length)} contacts as they would be sent`);
  if (!sample.length) return h("div", { class: "preview-sample" }, h("h4", {}, "No contact would be sent"));
  const fields = sampleFields(sample);
  const head = ["#", "Email", "Email status", ...fields.map((k) => FIELD_LABEL[k] || k)];
  const rows = sample.map((x, i) => {
    const id = (x.identifiers || [])[0] || {};
    const status = ((id.channels || {}).email || {}).status;
    return h("tr", {}, h("td", { class: "num" }, String(i + 1)), h("td", { class: "email" }, id.id || ""),
      h("td", {}, STATUS_WORDS[status] || status || ""), fields.map((k) => h("td", {}, x[k] === undefined ? "" : String(x[k]))));
  });
  return h("div", { class: "preview-sample" }, title,
    h("div", { class: "table-scroll" }, h("table", { class: "grid sample" },
      h("caption", { class: "visually-hidden" }, "The first contacts a run would send"),
      h("thead", {}, h("tr", {}, head.map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows))),
    h("details", { class: "sample-json" }, h("summary", {}, "The same contacts as JSON (the POST /batches items)"),
      h("pre", {}, JSON.stringify(sample, null, 2))));
}
