// Choosing an export's source from what storage holds. The container, folder and segment stay text
// fields (a name can always be typed: an identity may read a container it may not list), each with
// suggestions (a datalist), and under them what the current folder holds, as buttons: a folder opens
// it, a segment fills the field and reads its columns. GET /segments/containers and GET /segments list
// one level at a time, capped, so this never asks the API to walk a whole container.

import { h, state } from "./common.js";

function datalist(id) { return h("datalist", { id }); }

function fillList(list, values) {
  list.replaceChildren(...values.map((v) => h("option", { value: v })));
}

function parentOf(path) {
  const at = path.lastIndexOf("/");
  return at < 0 ? "" : path.slice(0, at);
}

// inputs: the three text fields; onSegment: called when a listed segment is chosen (reads its columns)
export function sourcePicker({ container, folder, segment, onSegment }) {
  const lists = { container: datalist("export-container-list"), folder: datalist("export-folder-list"),
    segment: datalist("export-segment-list") };
  container.setAttribute("list", lists.container.id);
  folder.setAttribute("list", lists.folder.id);
  segment.setAttribute("list", lists.segment.id);
  const summary = h("p", { class: "hint", id: "export-source-state", "aria-live": "polite" },
    "Choose or type the container; its folders and segments are listed here.");
  const choices = h("div", { class: "buttons", id: "export-source-choices", role: "group", "aria-label": "What the folder holds" });
  const element = h("div", { id: "export-source-browser" }, summary, choices, ...Object.values(lists));
  let listed = [];
  let seq = 0; // only the newest listing is shown

  const pick = (text, label, action) => {
    const b = h("button", { type: "button", class: "link", "aria-label": label }, text);
    b.addEventListener("click", action);
    return b;
  };

  const openFolder = (path) => { folder.value = path; folder.dispatchEvent(new Event("input", { bubbles: true })); listFolder(); };

  const show = (res) => {
    listed = res.segments;
    fillList(lists.segment, res.segments);
    fillList(lists.folder, res.folders);
    const where = res.folder ? `${res.container}/${res.folder}` : res.container;
    const counts = `${res.segments.length} segment${res.segments.length === 1 ? "" : "s"} and ${res.folders.length} ` +
      `folder${res.folders.length === 1 ? "" : "s"} in ${where}.`;
    summary.textContent = [counts, ...res.notices].join(" ");
    const label = (text, items) => (items.length ? h("span", { class: "hint" }, text) : null);
    choices.replaceChildren(
      label("Segments:", res.segments),
      ...res.segments.map((s) => pick(s, `Segment ${s}`, () => {
        segment.value = s;
        segment.dispatchEvent(new Event("input", { bubbles: true }));
        onSegment();
      })),
      label("Folders:", res.folders.length || res.folder ? [1] : []),
      ...res.folders.map((f) => pick(`${f.slice(res.folder ? res.folder.length + 1 : 0)}/`, `Open folder ${f}`, () => openFolder(f))),
      res.folder ? pick("↑ up", `Open folder ${parentOf(res.folder) || "(the container's root)"}`, () => openFolder(parentOf(res.folder))) : null);
  };

  const listFolder = async () => {
    const c = container.value.trim();
    const n = ++seq;
    listed = [];
    choices.replaceChildren();
    fillList(lists.segment, []);
    fillList(lists.folder, []);
    if (!c) {
      summary.textContent = "Choose or type the container; its folders and segments are listed here.";
      return;
    }
    summary.textContent = "Listing the folder…";
    try {
      const res = await state.api.get("segments", { container: c, folder: folder.value.trim() });
      if (n === seq) show(res);
    } catch (err) {
      if (n === seq) summary.textContent = `The folder could not be listed (${err.detail}). Type the folder and segment.`;
    }
  };

  let containerSeq = 0;
  const listContainers = async () => {
    const n = ++containerSeq;
    try { // the first 100 starting with what is typed: an account may hold many more
      const prefix = container.value.trim();
      const res = await state.api.get("segments/containers", /^[a-z0-9-]*$/.test(prefix) ? { prefix } : {});
      if (n !== containerSeq) return;
      fillList(lists.container, res.containers);
      if (res.notices.length && !container.value) summary.textContent = res.notices.join(" ");
    } catch (err) {
      if (!container.value) summary.textContent = `The containers could not be listed (${err.detail}). Type the names.`;
    }
  };

  let typing = null;
  container.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(listContainers, 250); });
  container.addEventListener("change", listFolder);
  folder.addEventListener("change", listFolder);
  segment.addEventListener("change", () => { if (listed.includes(segment.value.trim())) onSegment(); });

  return { element, start: () => { listContainers(); if (container.value.trim()) listFolder(); } };
}
