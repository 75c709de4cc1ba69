// The operator console: connections, exports and their runs, through the app's public JSON API only.
// No framework and no build step: plain DOM, one view at a time, chosen by the URL's hash.

import { Api, DEV_IDENTITIES } from "./api.js";
import { alertBox, current, devMode, h, showProblem, state } from "./common.js";
import { connectionsView } from "./connections.js";
import { exportView, exportsView } from "./exports.js";

// --- start, identity, header ------------------------------------------------------------------

function apiBase() { return new URL("../", window.location.href).toString(); }


export async function start() {
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

start();
