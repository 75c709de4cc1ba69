// The exports list, and one export: its form (source, mapping, tag, consent) and its runs.

import { ATTRIBUTES, ATTRIBUTE_LABEL, alertBox, busy, clearProblem, current, field, focusHeading, h, say, showProblem, state, statusBox } from "./common.js";
import { fillRunSummaries, nextCheck } from "./summaries.js";
import { loadRuns } from "./runs.js";
import { previewPanel, startPreview } from "./preview.js";
import { sourcePicker } from "./source_picker.js";

// --- exports list -----------------------------------------------------------------------------

export async function exportsView(main) {
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
    const preview = listPreviewButton(x, problem);
    const src = x.source;
    return h("tr", { dataset: { exportId: x.id } },
      h("th", { scope: "row" }, h("a", { href: `#/exports/${encodeURIComponent(x.id)}` }, x.name)),
      h("td", {}, names[x.connectionId] || "(connection removed)"),
      h("td", {}, h("code", {}, [src.container, src.folder, src.segment].filter(Boolean).join("/"))),
      h("td", { class: "last-run" }, h("span", { class: "loading" }, "…")),
      h("td", { class: "chart" }),
      h("td", { class: "next-check" }, nextCheck(x, exports.schedule)),
      h("td", { class: "actions" }, h("a", { href: `#/exports/${encodeURIComponent(x.id)}`, class: "button", "aria-label": `Open ${x.name}` }, "Open"), " ", run, " ", preview));
  });
  listBox.replaceChildren(h("table", { class: "grid exports" },
    h("caption", { class: "visually-hidden" }, "Exports"),
    h("thead", {}, h("tr", {}, ["Name", "Connection", "Segment", "Last run", "Recent runs", "Next check", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows)));
  fillRunSummaries(listBox, exports.exports, view);
}


// Preview from the list: the dry run starts, and the export's page shows it as it is planned.
function listPreviewButton(x, problem) {
  const button = h("button", { type: "button", "aria-label": `Preview ${x.name}: what a run would do, sending nothing` }, "Preview");
  button.addEventListener("click", async () => {
    clearProblem(problem);
    busy(button, true);
    try {
      const started = await startPreview(x.id);
      state.flash = { text: `Preview ${started.runId} started: it plans the latest refresh and sends nothing.`, preview: started.runId };
      location.hash = `#/exports/${encodeURIComponent(x.id)}`;
    } catch (err) {
      showProblem(problem, err);
      busy(button, false);
    }
  });
  return button;
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


// One function on purpose, for now: the form's controls depend on each other (the columns read for the
// source fill the email, attribute and consent selects; Run now follows whether the form is saved),
// and they share that state through this closure. Issue #16 rebuilds this view (source picker,
// preview); it is the place to split it into parts with their own state.
export async function exportView(main, exportId) {
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
  const picker = sourcePicker({ container, folder, segment, onSegment: () => loadColumns() });
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
  const percent = (id, dataField) => h("input", { id, type: "number", min: "0", max: "100", step: "1", value: "50",
    required: true, inputmode: "numeric", "data-field": dataField, class: "narrow" });
  const maxRemoval = percent("export-max-removal", "maxRemovalPercent");
  const maxRejected = percent("export-max-rejected", "maxRejectedPercent");
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
      // what was typed, as a number when it is one: the API names anything else
      maxRemovalPercent: maxRemoval.value.trim() === "" || isNaN(Number(maxRemoval.value)) ? maxRemoval.value : Number(maxRemoval.value),
      maxRejectedPercent: maxRejected.value.trim() === "" || isNaN(Number(maxRejected.value)) ? maxRejected.value : Number(maxRejected.value),
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
      picker.element,
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
    h("fieldset", { id: "export-safety" },
      h("legend", {}, "Safety thresholds"),
      h("p", { class: "hint" }, "A refresh over either threshold stops before anything is sent, so a broken refresh " +
        "cannot empty the segment in Omnisend; the run says why, and Run anyway sends it. 100 turns a threshold off."),
      h("div", { class: "row3" },
        field("export-max-removal", "Most members that may leave in one run (%)", maxRemoval),
        field("export-max-rejected", "Most rows that may be rejected in one run (%)", maxRejected))),
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
    maxRemoval.value = String(existing.maxRemovalPercent);
    maxRejected.value = String(existing.maxRejectedPercent);
  } else {
    fillAllColumns();
  }

  let dirty = false;
  const updateRun = () => {
    runNow.disabled = isNew;
    runHint.textContent = isNew ? "Save the export first; saving does not run it."
      : dirty ? "The settings below have unsaved changes: Run now and Preview use the saved settings." : "";
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
  const preview = previewPanel(view);
  const previewButton = h("button", { type: "button", id: "export-preview", "aria-describedby": "export-preview-hint" }, "Preview");
  const showPreview = (runId) => preview.show(runId, { focus: true });
  const runsSection = isNew ? null : h("section", { id: "runs", "aria-labelledby": "runs-h" },
    h("h2", { id: "runs-h" }, "Runs"),
    h("div", { class: "buttons" }, runNow, previewButton, runHint),
    h("p", { class: "hint", id: "export-preview-hint" }, "Preview plans the latest refresh as a run would and says what it " +
      "would send, change and untag, and how long it would take; it sends nothing and changes nothing in Omnisend."),
    runStatus, runsProblem, preview.element,
    h("div", { id: "run-list", class: "table-scroll" }, h("p", { class: "loading" }, "Loading runs…")));
  const reloadRuns = () => loadRuns(runsSection, runsProblem, exportId, view, showPreview);

  runNow.addEventListener("click", async () => {
    clearProblem(runsProblem);
    runStatus.hidden = true;
    busy(runNow, true);
    try {
      const started = await state.api.post(`exports/${encodeURIComponent(exportId)}/runs`);
      say(runStatus, `Run ${started.runId} started.`);
      await reloadRuns();
    } catch (err) {
      showProblem(runsProblem, err);
    } finally {
      busy(runNow, false);
      updateRun();
    }
  });

  previewButton.addEventListener("click", async () => {
    clearProblem(runsProblem);
    runStatus.hidden = true;
    busy(previewButton, true);
    try {
      const started = await startPreview(exportId);
      say(runStatus, `Preview ${started.runId} started: it plans the latest refresh and sends nothing.`);
      preview.show(started.runId).then(reloadRuns); // the history shows it ended at once, not at its next poll
      await reloadRuns();
    } catch (err) {
      showProblem(runsProblem, err);
    } finally {
      busy(previewButton, false);
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

  picker.start(); // what storage holds, for the source fields (a saved export's folder included)
  const pageStatus = statusBox();
  main.append(pageStatus);
  if (existing && !existing.enabled && existing.disabledReason) {
    main.append(h("p", { class: "problem" }, `Disabled: ${existing.disabledReason}`));
  }
  if (runsSection) main.append(runsSection);
  if (!isNew) form.prepend(h("h2", { id: "settings-h" }, "Settings"));
  main.append(form);
  const flashedPreview = state.flash && state.flash.preview;
  if (state.flash) {
    say(pageStatus, state.flash.text, state.flash.notices || []);
    state.flash = null;
  }
  if (existing) {
    loadColumns().then((ok) => { if (ok) clearProblem(problem, form); });
    if (flashedPreview) preview.show(flashedPreview).then(reloadRuns); // started from the exports list
    await reloadRuns();
  }
}
