// The operator console: connections, exports and their runs, through the app's public JSON API only.
// No framework and no build step: plain DOM, one view at a time, chosen by the URL's hash.

import { Api, ApiError, DEV_IDENTITIES } from "./api.js";

const ATTRIBUTES = [
  ["firstName", "First name"],
  ["lastName", "Last name"],
  ["address", "Address"],
  ["country", "Country/region"],
  ["state", "State"],
  ["city", "City"],
  ["postalCode", "Postal code"],
];
const ATTRIBUTE_LABEL = Object.fromEntries(ATTRIBUTES);
const FINAL = new Set(["succeeded", "partiallySucceeded", "failed", "cancelled"]);
const STATUS_TEXT = {
  queued: "Queued",
  planning: "Reading the segment",
  uploading: "Sending to Omnisend",
  verifying: "Confirming with Omnisend",
  succeeded: "Succeeded",
  partiallySucceeded: "Partly succeeded",
  failed: "Failed",
  cancelled: "Cancelled",
};
const CONSENT_TEXT =
  "Exporting to Omnisend sends profile data, including personal data such as " +
  "email addresses, names and postal addresses, out of this platform's compliance boundary to Omnisend, which " +
  "stores and processes it under its own terms. Your organisation remains responsible for making sure that " +
  "Omnisend meets the privacy and security obligations you have for this data. Your name and the time are " +
  "recorded with the connection as the consent.";
const POLL_MS = 1000;

const devMode = document.body.dataset.mode === "development";
const state = { api: null, me: null, identity: null, poll: null, flash: null, view: 0 };

// --- small DOM helpers ------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
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

function field(id, label, control, hint) {
  const hintId = hint ? `${id}-hint` : null;
  if (hintId) control.setAttribute("aria-describedby", hintId);
  return h("div", { class: "field" },
    h("label", { for: id }, label),
    control,
    hint ? h("p", { class: "hint", id: hintId }, hint) : null);
}

function fmtNumber(n) { return (n ?? 0).toLocaleString("en-US"); }

function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString("en-GB", { year: "numeric", month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function fmtDuration(run) {
  if (!run.startedAt) return "";
  const end = run.finishedAt ? new Date(run.finishedAt) : new Date();
  const s = Math.max(0, (end - new Date(run.startedAt)) / 1000);
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(Math.round(s % 60)).padStart(2, "0")} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}

// Errors as the API words them: the problem's detail, and each error's message with its field.
function showProblem(box, err, form) {
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

function clearProblem(box, form) {
  box.hidden = true;
  box.replaceChildren();
  if (form) markFields(form, []);
}

function say(box, text, notices = []) {
  box.replaceChildren(h("p", {}, text));
  if (notices.length) box.append(h("ul", {}, notices.map((n) => h("li", {}, n))));
  box.hidden = false;
}

function alertBox() { return h("div", { class: "problem", role: "alert", hidden: true }); }
function statusBox() { return h("div", { class: "notice", role: "status", hidden: true }); }

function busy(button, on) {
  button.disabled = on;
  button.setAttribute("aria-busy", on ? "true" : "false");
}

// --- start, identity, header ------------------------------------------------------------------

function apiBase() { return new URL("../", window.location.href).toString(); }

async function start() {
  if (devMode) {
    const box = document.getElementById("dev-identity-box");
    const select = document.getElementById("dev-identity");
    box.hidden = false;
    document.getElementById("dev-banner").hidden = false;
    select.value = sessionStorage.getItem("devIdentity") in DEV_IDENTITIES ? sessionStorage.getItem("devIdentity") : "admin";
    select.addEventListener("change", () => {
      sessionStorage.setItem("devIdentity", select.value);
      signIn();
    });
  }
  window.addEventListener("hashchange", () => {
    if (location.hash.startsWith("#/") || location.hash === "") route();
  });
  await signIn();
}

async function signIn() {
  const key = devMode ? document.getElementById("dev-identity").value : null;
  state.identity = key;
  state.api = new Api(apiBase(), key ? DEV_IDENTITIES[key] : null);
  const main = document.getElementById("main");
  try {
    state.me = await state.api.get("me");
  } catch (err) {
    state.me = null;
    document.getElementById("signed-in").textContent = "";
    for (const el of document.querySelectorAll("[data-admin-only]")) el.hidden = true;
    const box = alertBox();
    main.replaceChildren(h("h1", { tabindex: "-1" }, "The console cannot be used"), box);
    showProblem(box, err);
    return;
  }
  const role = state.me.isAdmin ? "Admin" : "Contributor";
  document.getElementById("signed-in").textContent = `Signed in as ${state.me.name} (${role})`;
  for (const el of document.querySelectorAll("[data-admin-only]")) el.hidden = !state.me.isAdmin;
  loadHealth();
  route();
}

async function loadHealth() {
  const box = document.getElementById("health");
  try {
    const health = await state.api.get("health");
    const list = document.getElementById("health-problems");
    list.replaceChildren(...(health.problems.length ? health.problems : ["No problems found."]).map((p) => h("li", {}, p)));
    document.getElementById("health-summary").textContent =
      health.status === "ok" ? "Health: OK" : `Health: ${health.problems.length} problem${health.problems.length === 1 ? "" : "s"}`;
    box.dataset.status = health.status;
    box.hidden = false;
  } catch {
    box.hidden = true;
  }
}

// --- routing ----------------------------------------------------------------------------------

function route() {
  if (!state.me) return;
  clearInterval(state.poll);
  state.poll = null;
  state.view += 1;
  const parts = (location.hash || "#/exports").slice(2).split("/");
  let section = parts[0] || "exports";
  if (section === "connections" && !state.me.isAdmin) section = "exports"; // admins only: not shown at all
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const main = document.getElementById("main");
  main.replaceChildren();
  if (section === "connections") connectionsView(main);
  else if (parts[1] === "new") exportView(main, null);
  else if (parts[1]) exportView(main, decodeURIComponent(parts[1]));
  else exportsView(main);
}

function focusHeading(main) {
  const heading = main.querySelector("h1");
  if (heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: true });
  }
}

function current(view) { return view === state.view; }

// --- connections (Admin) ----------------------------------------------------------------------

async function connectionsView(main) {
  const view = state.view;
  const listBox = h("div", { id: "connection-list" }, h("p", { class: "loading" }, "Loading connections…"));
  const listProblem = alertBox();
  main.append(
    h("h1", {}, "Connections"),
    h("p", { class: "lead" },
      "A connection is an Omnisend store that exports send contacts to. It holds the store's API key (kept in " +
      "Azure Key Vault, never shown again) and says who may use it. Only admins see this page."),
    h("section", { "aria-labelledby": "connections-h" }, h("h2", { id: "connections-h" }, "Your connections"), listProblem, listBox),
    connectionForm(() => loadConnections(listBox, listProblem, view)),
  );
  focusHeading(main);
  await loadConnections(listBox, listProblem, view);
}

async function loadConnections(listBox, problemBox, view) {
  let data;
  try {
    data = await state.api.get("connections");
  } catch (err) {
    if (current(view)) showProblem(problemBox, err);
    return;
  }
  if (!current(view)) return;
  clearProblem(problemBox);
  if (!data.connections.length) {
    listBox.replaceChildren(h("p", {}, "No connections yet. Add one below."));
    return;
  }
  const rows = data.connections.map((c) => {
    const actions = h("td", { class: "actions" });
    const removeButton = h("button", { type: "button", class: "danger", "aria-label": `Remove connection ${c.displayName}` }, "Remove");
    actions.append(removeButton);
    removeButton.addEventListener("click", () => confirmRemoval(actions, c, () => loadConnections(listBox, problemBox, view), problemBox));
    return h("tr", { dataset: { connectionId: c.id } },
      h("th", { scope: "row" }, c.displayName),
      h("td", {}, c.allowContributors ? "Admins and contributors" : "Admins only"),
      h("td", {}, c.consentedBy ? `${c.consentedBy}, ${fmtTime(c.consentedAt)}` : ""),
      h("td", { class: "num" }, c.maxProfilesPerExport ? fmtNumber(c.maxProfilesPerExport) : "No limit"),
      actions);
  });
  listBox.replaceChildren(h("table", { class: "grid" },
    h("caption", { class: "visually-hidden" }, "Connections"),
    h("thead", {}, h("tr", {}, ["Name", "Who may use it", "Consent given by", "Profiles per export", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows)));
}

function confirmRemoval(cell, connection, reload, problemBox) {
  const yes = h("button", { type: "button", class: "danger" }, `Yes, remove ${connection.displayName}`);
  const no = h("button", { type: "button" }, "Keep it");
  const original = [...cell.childNodes];
  cell.replaceChildren(
    h("p", { class: "confirm" }, "Remove it? Its API key is deleted and its exports are disabled."), yes, " ", no);
  yes.focus();
  no.addEventListener("click", () => { cell.replaceChildren(...original); original[0].focus(); });
  yes.addEventListener("click", async () => {
    busy(yes, true);
    try {
      await state.api.delete(`connections/${encodeURIComponent(connection.id)}`);
      await reload();
    } catch (err) {
      showProblem(problemBox, err);
      cell.replaceChildren(...original);
    }
  });
}

function connectionForm(onSaved) {
  const problem = alertBox();
  const status = statusBox();
  const name = h("input", { id: "conn-name", type: "text", required: true, maxlength: "100", autocomplete: "off", "data-field": "displayName" });
  const adminsOnly = h("input", { id: "conn-admins-only", type: "radio", name: "conn-audience", value: "admins", checked: true, "data-field": "allowContributors" });
  const contributors = h("input", { id: "conn-contributors", type: "radio", name: "conn-audience", value: "contributors" });
  const key = h("input", { id: "conn-key", type: "password", required: true, autocomplete: "off", spellcheck: "false", "data-field": "apiKey" });
  const maxProfiles = h("input", { id: "conn-max", type: "number", min: "1", step: "1", inputmode: "numeric", "data-field": "maxProfilesPerExport" });
  const consent = h("input", { id: "conn-consent", type: "checkbox", "data-field": "dataPrivacyConsent", "aria-describedby": "conn-consent-text" });
  const connect = h("button", { type: "button", id: "conn-connect" }, "Connect");
  const save = h("button", { type: "submit", id: "conn-save", class: "primary", disabled: true }, "Save");
  const connectState = h("p", { class: "hint", id: "conn-connect-state", "aria-live": "polite" },
    "Connect checks the API key with Omnisend without saving anything; then Save.");
  let connected = false;

  const body = () => {
    const b = {
      displayName: name.value.trim(),
      apiKey: key.value.trim(),
      allowContributors: contributors.checked,
      dataPrivacyConsent: consent.checked,
    };
    if (maxProfiles.value !== "") b.maxProfilesPerExport = Number(maxProfiles.value);
    return b;
  };
  const setConnected = (on, text) => {
    connected = on;
    save.disabled = !on;
    connectState.textContent = text;
    connectState.classList.toggle("ok", on);
  };

  const form = h("form", { id: "connection-form", class: "card", "aria-labelledby": "conn-form-h", novalidate: true },
    h("h2", { id: "conn-form-h" }, "Add a connection"),
    field("conn-name", "Display name", name, "How exports and people will see this connection."),
    h("fieldset", {},
      h("legend", {}, "Who may use it"),
      h("div", { class: "choice" }, adminsOnly, h("label", { for: "conn-admins-only" }, "Admins only")),
      h("div", { class: "choice" }, contributors, h("label", { for: "conn-contributors" }, "Admins and contributors"))),
    field("conn-key", "Omnisend API key", key,
      "In Omnisend: Store settings › API keys. It is sent to the app once, kept in Key Vault, and never shown again."),
    field("conn-max", "Most profiles per export (optional)", maxProfiles,
      "Your Omnisend plan's contact limit; a larger segment fails before anything is sent."),
    h("fieldset", { class: "consent" },
      h("legend", {}, "Data privacy and compliance"),
      h("p", { id: "conn-consent-text" }, CONSENT_TEXT),
      h("div", { class: "choice" }, consent, h("label", { for: "conn-consent" }, "I agree to the data privacy and compliance terms above"))),
    problem,
    status,
    h("div", { class: "buttons" }, connect, save),
    connectState);

  form.addEventListener("input", () => {
    if (connected) setConnected(false, "The form changed after the check: Connect again before saving.");
  });
  connect.addEventListener("click", async () => {
    clearProblem(problem, form);
    status.hidden = true;
    busy(connect, true);
    try {
      const res = await state.api.post("connections", body(), { dryRun: "true" });
      setConnected(true, `Connected: ${res.detail}`);
      save.focus();
    } catch (err) {
      setConnected(false, "Not connected.");
      showProblem(problem, err, form);
      if (err.errors.some((e) => e.field === "apiKey" && e.code === "rejected")) key.value = "";
    } finally {
      busy(connect, false);
    }
  });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!connected) return;
    clearProblem(problem, form);
    busy(save, true);
    try {
      const created = await state.api.post("connections", body());
      form.reset();
      key.value = ""; // the key is never kept in the page after it was saved
      setConnected(false, "Connect checks the API key with Omnisend without saving anything; then Save.");
      say(status, `Connection "${created.displayName}" saved. Its API key is stored by the app and is not shown again.`);
      await onSaved();
    } catch (err) {
      showProblem(problem, err, form);
      if (err.errors.some((e) => e.field === "apiKey")) key.value = "";
      setConnected(false, "Not saved.");
    } finally {
      save.disabled = !connected;
      save.setAttribute("aria-busy", "false");
    }
  });
  return form;
}

// --- exports list -----------------------------------------------------------------------------

async function exportsView(main) {
  const view = state.view;
  const problem = alertBox();
  const status = statusBox();
  const listBox = h("div", { id: "export-list" }, h("p", { class: "loading" }, "Loading exports…"));
  main.append(
    h("h1", {}, "Exports"),
    h("p", { class: "lead" },
      "An export sends one segment to Omnisend through a connection, on the schedule (each new, complete refresh) " +
      "and when you choose Run now. " + (state.me.isAdmin ? "" : "You see the exports of the connections open to contributors.")),
    h("p", {}, h("a", { class: "button primary", href: "#/exports/new" }, "New export")),
    problem, status, listBox);
  focusHeading(main);
  let exports, connections;
  try {
    [exports, connections] = await Promise.all([state.api.get("exports"), state.api.get("connections")]);
  } catch (err) {
    if (current(view)) showProblem(problem, err);
    return;
  }
  if (!current(view)) return;
  const names = Object.fromEntries(connections.connections.map((c) => [c.id, c.displayName]));
  if (!exports.exports.length) {
    listBox.replaceChildren(h("p", {}, "No exports yet."));
    return;
  }
  const rows = exports.exports.map((x) => {
    const run = h("button", { type: "button", "aria-label": `Run ${x.name} now` }, "Run now");
    run.addEventListener("click", async () => {
      clearProblem(problem);
      busy(run, true);
      try {
        const started = await state.api.post(`exports/${encodeURIComponent(x.id)}/runs`);
        state.flash = { text: `Run ${started.runId} started.` };
        location.hash = `#/exports/${encodeURIComponent(x.id)}`;
      } catch (err) {
        showProblem(problem, err);
        busy(run, false);
      }
    });
    const src = x.source;
    return h("tr", { dataset: { exportId: x.id } },
      h("th", { scope: "row" }, h("a", { href: `#/exports/${encodeURIComponent(x.id)}` }, x.name)),
      h("td", {}, names[x.connectionId] || "(connection removed)"),
      h("td", {}, h("code", {}, [src.container, src.folder, src.segment].filter(Boolean).join("/"))),
      h("td", {}, x.enabled ? "Enabled" : h("span", { title: x.disabledReason || "" }, "Disabled")),
      h("td", { class: "actions" }, h("a", { href: `#/exports/${encodeURIComponent(x.id)}`, class: "button", "aria-label": `Open ${x.name}` }, "Open"), " ", run));
  });
  listBox.replaceChildren(h("table", { class: "grid" },
    h("caption", { class: "visually-hidden" }, "Exports"),
    h("thead", {}, h("tr", {}, ["Name", "Connection", "Segment", "Schedule", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows)));
}

// --- one export: the form and its runs --------------------------------------------------------

function columnSelect(id, dataField, { optional = false } = {}) {
  const select = h("select", { id, "data-field": dataField, required: !optional });
  select.dataset.optional = optional ? "1" : "";
  return select;
}

function fillColumns(select, columns, value, placeholder) {
  const wanted = value ?? select.value;
  const options = [h("option", { value: "" }, placeholder)];
  const all = columns.slice();
  if (wanted && !all.includes(wanted)) all.unshift(wanted); // keep what is saved even when unknown now
  for (const c of all) options.push(h("option", { value: c }, c));
  select.replaceChildren(...options);
  select.value = wanted || "";
}

async function exportView(main, exportId) {
  const view = state.view;
  const isNew = exportId === null;
  const problem = alertBox();
  const status = statusBox();
  const heading = h("h1", {}, isNew ? "New export" : "Export");
  main.append(h("p", { class: "back" }, h("a", { href: "#/exports" }, "← All exports")), heading);
  focusHeading(main);

  let existing = null;
  let connections;
  try {
    [existing, connections] = await Promise.all([
      isNew ? null : state.api.get(`exports/${encodeURIComponent(exportId)}`),
      state.api.get("connections"),
    ]);
  } catch (err) {
    if (current(view)) { main.append(problem); showProblem(problem, err); }
    return;
  }
  if (!current(view)) return;
  if (existing) heading.textContent = `Export: ${existing.name}`;
  let columns = [];

  // the form's controls
  const name = h("input", { id: "export-name", type: "text", required: true, maxlength: "100", "data-field": "name" });
  const connection = h("select", { id: "export-connection", required: true, "data-field": "connectionId" },
    h("option", { value: "" }, connections.connections.length ? "— choose a connection —" : "(no connection you may use)"),
    connections.connections.map((c) => h("option", { value: c.id },
      c.displayName + (state.me.isAdmin ? (c.allowContributors ? " (admins and contributors)" : " (admins only)") : ""))));
  const container = h("input", { id: "export-container", type: "text", required: true, "data-field": "source.container", spellcheck: "false" });
  const folder = h("input", { id: "export-folder", type: "text", "data-field": "source.folder", spellcheck: "false" });
  const segment = h("input", { id: "export-segment", type: "text", required: true, "data-field": "source.segment", spellcheck: "false" });
  const readColumns = h("button", { type: "button", id: "export-read-columns" }, "Read columns");
  const columnsState = h("p", { class: "hint", id: "export-columns-state", "aria-live": "polite" },
    "Read the segment's columns to choose them below.");
  const email = columnSelect("export-email", "mapping.email");
  const attrList = h("div", { id: "export-attributes", class: "attributes" });
  const addAttr = h("button", { type: "button", id: "export-add-attribute" }, "Add attribute");
  const tag = h("input", { id: "export-tag", type: "text", maxlength: "128", "data-field": "tag" });
  const consentOn = h("input", { id: "export-consent-on", type: "checkbox" });
  const consentColumn = columnSelect("export-consent-column", "consent.column");
  const subscribed = h("input", { id: "export-consent-subscribed", type: "text", value: "true, yes, 1", "data-field": "consent.subscribedValues" });
  const unsubscribed = h("input", { id: "export-consent-unsubscribed", type: "text", value: "false, no, 0", "data-field": "consent.unsubscribedValues" });
  const changedAt = columnSelect("export-consent-changed-at", "consent.changedAtColumn", { optional: true });
  const welcome = h("input", { id: "export-welcome", type: "checkbox", "data-field": "sendWelcomeMessage" });
  const enabled = h("input", { id: "export-enabled", type: "checkbox", checked: true, "data-field": "enabled" });
  const save = h("button", { type: "submit", id: "export-save", class: "primary" }, "Save");
  const runNow = h("button", { type: "button", id: "export-run", class: isNew ? null : "primary" }, "Run now");
  const runHint = h("p", { class: "hint", id: "export-run-hint", "aria-live": "polite" });
  const formButtons = h("div", { class: "buttons" }, save, isNew ? runNow : null);
  const consentBox = h("fieldset", { id: "export-consent", class: "nested", hidden: true },
    h("legend", {}, "Email subscription status"),
    field("export-consent-column", "Consent column", consentColumn, "The column that says whether the person agreed to email marketing."),
    field("export-consent-subscribed", "Values meaning subscribed", subscribed, "Comma-separated; compared without case."),
    field("export-consent-unsubscribed", "Values meaning unsubscribed", unsubscribed, "Other values leave the status as it is in Omnisend."),
    field("export-consent-changed-at", "Consent changed at (optional)", changedAt, "A date column; without it, the refresh time is used."));

  const attrRows = [];
  const usedAttributes = () => attrRows.map((r) => r.field.value);
  const refreshAttributeChoices = () => {
    for (const r of attrRows) {
      for (const opt of r.field.options) opt.disabled = opt.value !== r.field.value && usedAttributes().includes(opt.value);
    }
    addAttr.disabled = attrRows.length >= ATTRIBUTES.length;
  };
  let rowSeq = 0;
  const addAttributeRow = (attribute, column) => {
    const n = ++rowSeq;
    const fieldSelect = h("select", { id: `attr-field-${n}` }, ATTRIBUTES.map(([k, label]) => h("option", { value: k }, label)));
    fieldSelect.value = attribute;
    const colSelect = columnSelect(`attr-column-${n}`, `mapping.${attribute}`);
    fillColumns(colSelect, columns, column || "", "— choose a column —");
    const remove = h("button", { type: "button", class: "link" }, "Remove");
    const row = { field: fieldSelect, column: colSelect, el: null };
    const label = () => remove.setAttribute("aria-label", `Remove attribute ${ATTRIBUTE_LABEL[fieldSelect.value]}`);
    label();
    row.el = h("div", { class: "attr-row", role: "group", "aria-label": "Attribute" },
      h("div", { class: "field" }, h("label", { for: fieldSelect.id }, "Omnisend field"), fieldSelect),
      h("div", { class: "field" }, h("label", { for: colSelect.id }, "Segment column"), colSelect),
      remove);
    fieldSelect.addEventListener("change", () => {
      colSelect.dataset.field = `mapping.${fieldSelect.value}`;
      label();
      refreshAttributeChoices();
    });
    remove.addEventListener("click", () => {
      attrRows.splice(attrRows.indexOf(row), 1);
      row.el.remove();
      refreshAttributeChoices();
      addAttr.focus();
    });
    attrRows.push(row);
    attrList.append(row.el);
    refreshAttributeChoices();
    return row;
  };
  addAttr.addEventListener("click", () => {
    const free = ATTRIBUTES.find(([k]) => !usedAttributes().includes(k));
    if (free) addAttributeRow(free[0], "").field.focus();
  });
  consentOn.addEventListener("change", () => { consentBox.hidden = !consentOn.checked; });

  const fillAllColumns = () => {
    fillColumns(email, columns, null, "— choose the email column —");
    fillColumns(consentColumn, columns, null, "— choose a column —");
    fillColumns(changedAt, columns, null, "(the refresh time)");
    for (const r of attrRows) fillColumns(r.column, columns, null, "— choose a column —");
  };

  const loadColumns = async () => {
    clearProblem(problem, form);
    busy(readColumns, true);
    columnsState.textContent = "Reading the segment's columns…";
    try {
      const res = await state.api.get("segments/columns", {
        container: container.value.trim(), folder: folder.value.trim(), segment: segment.value.trim() });
      columns = res.columns;
      fillAllColumns();
      const where = res.origin === "model.json" ? "model.json" : `the header row of refresh ${res.refresh}`;
      columnsState.textContent = `${columns.length} columns read from ${where}.` + (res.notices.length ? " " + res.notices.join(" ") : "");
      return true;
    } catch (err) {
      columnsState.textContent = "The columns could not be read.";
      showProblem(problem, err, form);
      return false;
    } finally {
      busy(readColumns, false);
    }
  };
  readColumns.addEventListener("click", loadColumns);

  const csv = (text) => text.split(",").map((v) => v.trim()).filter(Boolean);
  const body = () => {
    const mapping = {};
    if (email.value) mapping.email = email.value; // none chosen: the API says it is required
    for (const r of attrRows) if (r.column.value) mapping[r.field.value] = r.column.value;
    const b = {
      name: name.value.trim(),
      connectionId: connection.value,
      source: { container: container.value.trim(), folder: folder.value.trim(), segment: segment.value.trim() },
      mapping,
      enabled: enabled.checked,
      sendWelcomeMessage: welcome.checked,
    };
    if (tag.value.trim()) b.tag = tag.value.trim();
    if (consentOn.checked) {
      b.consent = { column: consentColumn.value || null, subscribedValues: csv(subscribed.value), unsubscribedValues: csv(unsubscribed.value) };
      if (changedAt.value) b.consent.changedAtColumn = changedAt.value;
    }
    return b;
  };

  const form = h("form", { id: "export-form", class: "card", novalidate: true, "aria-label": isNew ? "New export" : "Settings" },
    h("fieldset", {},
      h("legend", {}, "Export"),
      field("export-name", "Name", name),
      field("export-connection", "Connection", connection,
        state.me.isAdmin ? "The Omnisend store to send to." : "Only the connections open to contributors are listed.")),
    h("fieldset", {},
      h("legend", {}, "Segment source"),
      h("div", { class: "row3" },
        field("export-container", "Container", container),
        field("export-folder", "Folder (optional)", folder),
        field("export-segment", "Segment", segment)),
      h("div", { class: "buttons" }, readColumns), columnsState),
    h("fieldset", {},
      h("legend", {}, "Data mapping"),
      field("export-email", "Email (required)", email, "The column holding each contact's email address."),
      attrList,
      h("div", { class: "buttons" }, addAttr)),
    h("fieldset", {},
      h("legend", {}, "Omnisend options"),
      field("export-tag", "Membership tag (optional)", tag,
        "Every contact of the segment gets this tag; contacts who leave the segment lose it. Empty: the segment's name."),
      h("div", { class: "choice" }, consentOn, h("label", { for: "export-consent-on" }, "Set the email subscription status from a column")),
      h("p", { class: "hint" }, "Without it, exporting a profile never subscribes it: new contacts start as not subscribed and existing statuses stay."),
      consentBox,
      h("div", { class: "choice" }, welcome, h("label", { for: "export-welcome" }, "Send Omnisend's welcome message to contacts this export subscribes")),
      h("div", { class: "choice" }, enabled, h("label", { for: "export-enabled" }, "Enabled: run on the schedule, once for each new complete refresh"))),
    problem,
    status,
    formButtons,
    isNew ? runHint : null);

  // fill in a saved export
  if (existing) {
    name.value = existing.name;
    connection.value = existing.connectionId;
    if (connection.value !== existing.connectionId) {
      connection.prepend(h("option", { value: existing.connectionId }, "(connection removed)"));
      connection.value = existing.connectionId;
    }
    container.value = existing.source.container;
    folder.value = existing.source.folder || "";
    segment.value = existing.source.segment;
    fillColumns(email, [], existing.mapping.email, "— choose the email column —");
    for (const [k] of ATTRIBUTES) if (existing.mapping[k]) addAttributeRow(k, existing.mapping[k]);
    tag.value = existing.tag || "";
    if (existing.consent) {
      consentOn.checked = true;
      consentBox.hidden = false;
      fillColumns(consentColumn, [], existing.consent.column, "— choose a column —");
      subscribed.value = existing.consent.subscribedValues.join(", ");
      unsubscribed.value = existing.consent.unsubscribedValues.join(", ");
      fillColumns(changedAt, [], existing.consent.changedAtColumn || "", "(the refresh time)");
    } else {
      fillColumns(consentColumn, [], "", "— choose a column —");
      fillColumns(changedAt, [], "", "(the refresh time)");
    }
    welcome.checked = existing.sendWelcomeMessage;
    enabled.checked = existing.enabled;
  } else {
    fillAllColumns();
  }

  let dirty = false;
  const updateRun = () => {
    runNow.disabled = isNew;
    runHint.textContent = isNew ? "Save the export first; saving does not run it."
      : dirty ? "The settings below have unsaved changes: Run now runs the saved settings." : "";
  };
  form.addEventListener("input", () => { dirty = true; updateRun(); });
  form.addEventListener("change", () => { dirty = true; updateRun(); });
  updateRun();

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearProblem(problem, form);
    status.hidden = true;
    busy(save, true);
    try {
      const saved = isNew ? await state.api.post("exports", body())
        : await state.api.put(`exports/${encodeURIComponent(exportId)}`, body());
      const text = `Export "${saved.name}" saved. Saving does not run it.`;
      if (isNew) {
        state.flash = { text, notices: saved.notices || [] };
        location.hash = `#/exports/${encodeURIComponent(saved.id)}`;
        return;
      }
      heading.textContent = `Export: ${saved.name}`;
      dirty = false;
      updateRun();
      say(status, text, saved.notices || []);
    } catch (err) {
      showProblem(problem, err, form);
    } finally {
      busy(save, false);
    }
  });

  // an export that is saved: its runs first (Run now, the history, the progress), then its settings
  const runsProblem = alertBox();
  const runStatus = statusBox();
  const runsSection = isNew ? null : h("section", { id: "runs", "aria-labelledby": "runs-h" },
    h("h2", { id: "runs-h" }, "Runs"),
    h("div", { class: "buttons" }, runNow, runHint),
    runStatus, runsProblem,
    h("div", { id: "run-list", class: "table-scroll" }, h("p", { class: "loading" }, "Loading runs…")));

  runNow.addEventListener("click", async () => {
    clearProblem(runsProblem);
    runStatus.hidden = true;
    busy(runNow, true);
    try {
      const started = await state.api.post(`exports/${encodeURIComponent(exportId)}/runs`);
      say(runStatus, `Run ${started.runId} started.`);
      await loadRuns(runsSection, runsProblem, exportId, view);
    } catch (err) {
      showProblem(runsProblem, err);
    } finally {
      busy(runNow, false);
      updateRun();
    }
  });

  if (!isNew) {
    const del = h("button", { type: "button", class: "danger", id: "export-delete" }, "Delete export");
    del.addEventListener("click", () => {
      const yes = h("button", { type: "button", class: "danger" }, "Yes, delete it");
      const no = h("button", { type: "button" }, "Keep it");
      const confirm = h("span", { class: "confirm" }, "Delete this export? It stops running; contacts already in Omnisend stay there. ", yes, " ", no);
      del.replaceWith(confirm);
      yes.focus();
      no.addEventListener("click", () => { confirm.replaceWith(del); del.focus(); });
      yes.addEventListener("click", async () => {
        try {
          await state.api.delete(`exports/${encodeURIComponent(exportId)}`);
          location.hash = "#/exports";
        } catch (err) {
          showProblem(problem, err);
          confirm.replaceWith(del);
        }
      });
    });
    formButtons.append(del);
  }

  const pageStatus = statusBox();
  main.append(pageStatus);
  if (existing && !existing.enabled && existing.disabledReason) {
    main.append(h("p", { class: "problem" }, `Disabled: ${existing.disabledReason}`));
  }
  if (runsSection) main.append(runsSection);
  if (!isNew) form.prepend(h("h2", { id: "settings-h" }, "Settings"));
  main.append(form);
  if (state.flash) {
    say(pageStatus, state.flash.text, state.flash.notices || []);
    state.flash = null;
  }
  if (existing) {
    loadColumns().then((ok) => { if (ok) clearProblem(problem, form); });
    await loadRuns(runsSection, runsProblem, exportId, view);
  }
}

// --- runs -------------------------------------------------------------------------------------

// the run ended and every batch is accounted for: its counts no longer change
function settled(run) {
  return FINAL.has(run.status) && run.countsFinal;
}

async function loadRuns(section, problemBox, exportId, view) {
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
  for (const run of runs) {
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

start();
