// What every view of the console shares: labels, the signed-in state, and small DOM helpers.

import { ApiError } from "./api.js";

export const ATTRIBUTES = [
  ["firstName", "First name"],
  ["lastName", "Last name"],
  ["address", "Address"],
  ["country", "Country/region"],
  ["state", "State"],
  ["city", "City"],
  ["postalCode", "Postal code"],
];

export const ATTRIBUTE_LABEL = Object.fromEntries(ATTRIBUTES);

export const FINAL = new Set(["succeeded", "partiallySucceeded", "failed", "cancelled"]);

export const STATUS_TEXT = {
  queued: "Queued",
  planning: "Reading the segment",
  uploading: "Sending to Omnisend",
  verifying: "Confirming with Omnisend",
  succeeded: "Succeeded",
  partiallySucceeded: "Partly succeeded",
  failed: "Failed",
  cancelled: "Cancelled",
};

export const CONSENT_TEXT =
  "Exporting to Omnisend sends profile data, including personal data such as " +
  "email addresses, names and postal addresses, out of this platform's compliance boundary to Omnisend, which " +
  "stores and processes it under its own terms. Your organisation remains responsible for making sure that " +
  "Omnisend meets the privacy and security obligations you have for this data. Your name and the time are " +
  "recorded with the connection as the consent.";

export const POLL_MS = 1000;


export const devMode = document.body.dataset.mode === "development";

export const state = { api: null, me: null, identity: null, poll: null, flash: null, view: 0 };


// --- small DOM helpers ------------------------------------------------------------------------

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}


export function field(id, label, control, hint) {
  const hintId = hint ? `${id}-hint` : null;
  if (hintId) control.setAttribute("aria-describedby", hintId);
  return h("div", { class: "field" },
    h("label", { for: id }, label),
    control,
    hint ? h("p", { class: "hint", id: hintId }, hint) : null);
}


export function fmtNumber(n) { return (n ?? 0).toLocaleString("en-US"); }
export const plural = (n, one, many) => `${fmtNumber(n)} ${n === 1 ? one : many}`;


export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString("en-GB", { year: "numeric", month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}


export function fmtDuration(run) {
  if (!run.startedAt) return "";
  const end = run.finishedAt ? new Date(run.finishedAt) : new Date();
  return fmtSeconds(Math.max(0, (end - new Date(run.startedAt)) / 1000));
}


export function fmtSeconds(s) {
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(Math.round(s % 60)).padStart(2, "0")} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}


// Errors as the API words them: the problem's detail, and each error's message with its field.
export function showProblem(box, err, form) {
  box.replaceChildren();
  box.hidden = false;
  const e = err instanceof ApiError ? err : new ApiError(0, { detail: String(err && err.message || err) });
  box.append(h("p", { class: "problem-detail" }, e.detail));
  if (e.errors.length) {
    box.append(h("ul", {}, e.errors.map((x) =>
      h("li", {}, x.field ? h("code", {}, x.field) : null, x.field ? ": " : "", x.message))));
  }
  if (form) markFields(form, e.errors);
}


function markFields(form, errors) {
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  for (const x of errors || []) {
    const el = form.querySelector(`[data-field="${CSS.escape(x.field || "")}"]`);
    if (el) el.setAttribute("aria-invalid", "true");
  }
}


export function clearProblem(box, form) {
  box.hidden = true;
  box.replaceChildren();
  if (form) markFields(form, []);
}


export function say(box, text, notices = []) {
  box.replaceChildren(h("p", {}, text));
  if (notices.length) box.append(h("ul", {}, notices.map((n) => h("li", {}, n))));
  box.hidden = false;
}


export function alertBox() { return h("div", { class: "problem", role: "alert", hidden: true }); }

export function statusBox() { return h("div", { class: "notice", role: "status", hidden: true }); }


export function busy(button, on) {
  button.disabled = on;
  button.setAttribute("aria-busy", on ? "true" : "false");
}


export function focusHeading(main) {
  const heading = main.querySelector("h1");
  if (heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: true });
  }
}


export function current(view) { return view === state.view; }
