// What a run's numbers mean to a person: its outcome in words, the parts of its bar, its phase, its
// pace and the time left. Pure functions of the run JSON (no DOM), so the browser tests can check them.

import { FINAL, STATUS_TEXT, fmtNumber, plural } from "./common.js";

// The bar in parts: confirmed (green), failed (red), not yet known (grey), of the contacts queued.
// Failed contacts count as done but never as exported, so they are never drawn as progress.
export function barParts(run) {
  const c = run.counts;
  const queued = c.queued || 0;
  const confirmed = Math.min(c.confirmed || 0, queued);
  const failed = Math.min(c.failed || 0, queued - confirmed);
  return { queued, confirmed, failed, unknown: queued - confirmed - failed };
}


// The outcome worded by what happened. The API's status values stay as they are (data-status);
// red ("bad") only where contacts failed or nothing arrived, amber only for failed tag changes.
export function outcome(run) {
  const c = run.counts;
  if (!FINAL.has(run.status)) return { text: STATUS_TEXT[run.status] || run.status, tone: "active" };
  if (run.kind === "preview") return previewOutcome(run);
  let head;
  let tone;
  if (run.status === "failed") {
    head = run.heldByThreshold ? "Held by a safety threshold" : "Failed";
    tone = "bad";
  } else if (run.status === "cancelled") {
    head = "Cancelled";
    tone = "neutral";
  } else if (c.confirmed > 0) {
    head = "Exported";
    tone = c.failed > 0 ? "bad" : c.tagFailures > 0 ? "warn" : "ok";
  } else {
    head = c.skipped > 0 ? "Up to date" : "Nothing to export";
    tone = c.failed > 0 ? "bad" : "ok";
  }
  const parts = [head];
  if ((run.status === "cancelled" || run.status === "failed") && c.confirmed > 0) parts.push(`${fmtNumber(c.confirmed)} exported`);
  if (c.rejected > 0) parts.push(`${plural(c.rejected, "row", "rows")} rejected`);
  if (c.failed > 0) parts.push(`${plural(c.failed, "contact", "contacts")} failed`);
  if (c.tagFailures > 0) parts.push(`${plural(c.tagFailures, "tag change", "tag changes")} failed`);
  return { text: parts.join(" · "), tone };
}


// A preview sent nothing: it says what a run would do, never "Exported" or "Up to date".
function previewOutcome(run) {
  const c = run.counts;
  if (run.status === "failed") return { text: "Preview failed", tone: "bad" };
  if (run.status === "cancelled") return { text: "Preview cancelled", tone: "neutral" };
  const p = run.preview || {};
  const parts = ["Preview", c.queued > 0 ? `would send ${fmtNumber(c.queued)}` : "nothing would be sent"];
  if (c.rejected > 0) parts.push(`${plural(c.rejected, "row", "rows")} would be rejected`);
  if (p.wouldStop) parts.push("a run would stop before sending");
  return { text: parts.join(" · "), tone: p.wouldStop ? "warn" : "preview" };
}


// What a running run is doing now.
export function phase(run) {
  if (FINAL.has(run.status)) return null;
  if (run.status === "queued") return "waiting to start";
  if (run.status === "planning") return "reading the segment";
  const { unknown } = barParts(run);
  if (unknown > 0) return run.status === "verifying" ? "sending contacts (waiting for Omnisend's results)" : "sending contacts";
  return "tagging members";
}


// Requests a run still needs, at least: each contact batch not sent yet is one POST /batches and one
// read of its result; a batch sent and not counted yet needs that read; and the members still to be
// tagged (or untagged: the leavers) go 250 emails to a tags request.
export function requestsLeft(run, budget) {
  const c = run.counts;
  const perBatch = budget.contactsPerRequest || 100;
  const perTag = budget.emailsPerTagRequest || 250;
  const batches = Math.max(c.batches || 0, Math.ceil((c.queued || 0) / perBatch));
  const unsent = Math.max(0, batches - (c.batchesSent || 0));
  const unread = Math.max(0, (c.batchesSent || 0) - (c.batchesDone || 0));
  const toTag = Math.max(0, (c.queued || 0) - (c.failed || 0) - (c.alreadyTagged || 0) - (c.tagged || 0) - (c.tagFailures || 0));
  const toUntag = Math.max(0, (c.left || 0) - (c.untagged || 0));
  const tags = Math.ceil(toTag / perTag) + Math.ceil(toUntag / perTag);
  return { contacts: 2 * unsent + unread, tags };
}


// Contacts counted (confirmed or failed) a minute: over the last PACE_WINDOW_MS of the samples the page
// took, else on average since the run started.
export const PACE_WINDOW_MS = 30000;

export function pace(run, samples, nowMs) {
  const { confirmed, failed } = barParts(run);
  const done = confirmed + failed;
  const recent = (samples || []).filter(([t]) => t >= nowMs - PACE_WINDOW_MS);
  if (recent.length >= 2) {
    const [t0, d0] = recent[0];
    const [t1, d1] = recent[recent.length - 1];
    if (t1 - t0 >= 5000) return (60000 * (d1 - d0)) / (t1 - t0);
  }
  if (run.startedAt && done > 0) {
    const ms = nowMs - new Date(run.startedAt).getTime();
    if (ms > 0) return (60000 * done) / ms;
  }
  return null;
}


// Seconds left: the longer of what is left at the pace seen (when there is one), and what is left at
// the connection's request budget, the fastest the app may go (other runs of the same connection share it).
export function secondsLeft(run, budget, perMinute) {
  if (FINAL.has(run.status) || !budget || !budget.requestsPerMinute) return null;
  if (run.status === "queued" || run.status === "planning") return null;
  const req = requestsLeft(run, budget);
  const byBudget = Math.max(60 * (req.contacts + req.tags) / budget.requestsPerMinute,
    budget.tagRequestsPerMinute ? 60 * req.tags / budget.tagRequestsPerMinute : 0);
  const { unknown } = barParts(run);
  const byPace = perMinute > 0 ? (60 * unknown) / perMinute : 0;
  return Math.max(byBudget, byPace);
}


export function fmtLeft(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 1) return "almost done";
  return `${fmtAbout(seconds)} left`;
}


// A duration in words, rounded to the minute: "less than a minute", "about 4 min", "about 1 h 05 min".
export function fmtAbout(seconds) {
  if (seconds < 60) return "less than a minute";
  const m = Math.round(seconds / 60);
  if (m < 60) return `about ${m} min`;
  return `about ${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}
