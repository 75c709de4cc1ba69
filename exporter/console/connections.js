// The connections view (Admin): list, edit (name, audience, limit, a new key), remove, and the form
// that checks a key with Omnisend first.

import { CONSENT_TEXT, alertBox, busy, clearProblem, current, field, fmtNumber, fmtTime, focusHeading, h, say, showProblem, state, statusBox } from "./common.js";

// --- connections (Admin) ----------------------------------------------------------------------

export async function connectionsView(main) {
  const view = state.view;
  const listBox = h("div", { id: "connection-list" }, h("p", { class: "loading" }, "Loading connections…"));
  const listProblem = alertBox();
  const saved = statusBox();
  saved.id = "connection-saved";
  main.append(
    h("h1", {}, "Connections"),
    h("p", { class: "lead" },
      "A connection is an Omnisend store that exports send contacts to. It holds the store's API key (kept in " +
      "Azure Key Vault, never shown again) and says who may use it. Only admins see this page."),
    h("section", { "aria-labelledby": "connections-h" }, h("h2", { id: "connections-h" }, "Your connections"), listProblem, saved,
      listBox),
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
  const editBox = h("div", { id: "connection-edit" });
  const reload = () => loadConnections(listBox, problemBox, view);
  const rows = data.connections.map((c) => {
    const actions = h("td", { class: "actions" });
    const editButton = h("button", { type: "button", "aria-label": `Edit connection ${c.displayName}` }, "Edit");
    const removeButton = h("button", { type: "button", class: "danger", "aria-label": `Remove connection ${c.displayName}` }, "Remove");
    actions.append(editButton, " ", removeButton);
    editButton.addEventListener("click", () => {
      editBox.replaceChildren(editForm(c, reload, () => { editBox.replaceChildren(); editButton.focus(); }));
      editBox.querySelector("input").focus();
    });
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
    h("tbody", {}, rows)), editBox);
}


// Editing a connection: only what changed is sent (PATCH). A new API key is write-only: the field
// starts empty, the app checks the key with Omnisend before it replaces the old one, and the page
// forgets it once sent.
function editForm(c, reload, close) {
  const problem = alertBox();
  const name = h("input", { id: "edit-name", type: "text", required: true, maxlength: "100", value: c.displayName, "data-field": "displayName" });
  const adminsOnly = h("input", { id: "edit-admins-only", type: "radio", name: "edit-audience", checked: !c.allowContributors, "data-field": "allowContributors" });
  const contributors = h("input", { id: "edit-contributors", type: "radio", name: "edit-audience", checked: c.allowContributors });
  const maxProfiles = h("input", { id: "edit-max", type: "number", min: "1", step: "1", inputmode: "numeric", value: c.maxProfilesPerExport ?? "", "data-field": "maxProfilesPerExport" });
  const key = h("input", { id: "edit-key", type: "password", autocomplete: "off", spellcheck: "false", "data-field": "apiKey" });
  const save = h("button", { type: "submit", class: "primary" }, "Save changes");
  const cancel = h("button", { type: "button" }, "Cancel");
  const form = h("form", { id: "connection-edit-form", class: "card", novalidate: true, "aria-labelledby": "edit-h" },
    h("h3", { id: "edit-h" }, `Edit ${c.displayName}`),
    field("edit-name", "Display name", name),
    h("fieldset", {},
      h("legend", {}, "Who may use it"),
      h("div", { class: "choice" }, adminsOnly, h("label", { for: "edit-admins-only" }, "Admins only")),
      h("div", { class: "choice" }, contributors, h("label", { for: "edit-contributors" }, "Admins and contributors"))),
    field("edit-max", "Most profiles per export (optional)", maxProfiles),
    field("edit-key", "New Omnisend API key (optional)", key,
      "Leave empty to keep the current key. A new key is checked with Omnisend (Connect) before it replaces the old one."),
    problem,
    h("div", { class: "buttons" }, save, cancel));
  cancel.addEventListener("click", close);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearProblem(problem, form);
    const changes = {};
    if (name.value.trim() !== c.displayName) changes.displayName = name.value.trim();
    if (contributors.checked !== c.allowContributors) changes.allowContributors = contributors.checked;
    if (maxProfiles.value !== "" && Number(maxProfiles.value) !== c.maxProfilesPerExport) changes.maxProfilesPerExport = Number(maxProfiles.value);
    if (key.value.trim()) changes.apiKey = key.value.trim();
    if (!Object.keys(changes).length) { close(); return; }
    busy(save, true);
    try {
      const saved = await state.api.patch(`connections/${encodeURIComponent(c.id)}`, changes);
      key.value = "";
      await reload();
      say(document.querySelector("#connection-saved"), `Connection "${saved.displayName}" saved.` +
        (changes.apiKey ? " Connected: Omnisend accepted the new API key, which replaces the old one." : ""));
    } catch (err) {
      key.value = ""; // a key is never kept in the page, rejected or not
      showProblem(problem, err, form);
      busy(save, false);
    }
  });
  return form;
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


// The connect form in one function: its parts (consent text, key check, dry run) share the form's
// state through this closure; about a third of it is the markup of the consent and the fields.
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
