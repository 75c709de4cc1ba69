// The app's public JSON API, as the console calls it. Nothing else is called.
//
// In Azure, App Service Authentication signs the browser in and adds X-MS-CLIENT-PRINCIPAL to every
// request itself. In the local runner's development mode nobody does, so the console sends the
// development identity chosen in the page (the same header the CLI sends).

export const DEV_IDENTITIES = {
  admin: { name: "local-admin@dev", roles: ["Admin"], label: "Admin" },
  contributor: { name: "local-contributor@dev", roles: ["Contributor"], label: "Contributor" },
};

export class ApiError extends Error {
  // status 0: the API could not be reached. detail and errors are the API's own words (problem+json).
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.title = problem.title || "";
    this.detail = problem.detail || problem.title || `The API answered ${status}.`;
    this.errors = Array.isArray(problem.errors) ? problem.errors : [];
  }
}

function base64(text) {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

export function encodePrincipal(name, roles) {
  // What App Service Authentication sends (see exporter/access.py encode_principal).
  const claims = [{ typ: "name", val: name }, ...roles.map((r) => ({ typ: "roles", val: r }))];
  return base64(JSON.stringify({ auth_typ: "aad", name_typ: "name", role_typ: "roles", claims }));
}

export class Api {
  constructor(baseUrl, devIdentity = null) {
    this.baseUrl = baseUrl.endsWith("/") ? baseUrl : baseUrl + "/";
    this.devIdentity = devIdentity; // null outside development mode
  }

  headers(extra = {}) {
    const h = { Accept: "application/json, application/problem+json", ...extra };
    if (this.devIdentity) h["X-MS-CLIENT-PRINCIPAL"] = encodePrincipal(this.devIdentity.name, this.devIdentity.roles);
    return h;
  }

  url(path, query) {
    const u = new URL(path, this.baseUrl);
    for (const [k, v] of Object.entries(query || {})) {
      if (v !== undefined && v !== null) u.searchParams.set(k, v);
    }
    return u.toString();
  }

  async send(method, path, { body, query } = {}) {
    const init = { method, headers: this.headers(), credentials: "same-origin", cache: "no-store" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(this.url(path, query), init);
    } catch (e) {
      throw new ApiError(0, { detail: `The exporter API could not be reached (${e.message}).` });
    }
    if (!res.ok) {
      let problem = {};
      const type = res.headers.get("Content-Type") || "";
      if (type.includes("json")) {
        try { problem = await res.json(); } catch { problem = {}; }
      } else if (res.status === 401) { // the platform's own answer: the sign-in session ended
        problem = { detail: "You are not signed in any more. Sign in again (/.auth/login/aad) and reload the console." };
      }
      throw new ApiError(res.status, problem);
    }
    return res;
  }

  async request(method, path, options = {}) {
    const res = await this.send(method, path, options);
    if (res.status === 204) return null;
    const type = res.headers.get("Content-Type") || "";
    return type.includes("json") ? res.json() : res.text();
  }

  get(path, query) { return this.request("GET", path, { query }); }
  post(path, body, query) { return this.request("POST", path, { body, query }); }
  put(path, body) { return this.request("PUT", path, { body }); }
  patch(path, body) { return this.request("PATCH", path, { body }); }
  delete(path) { return this.request("DELETE", path); }

  // A file the API sends (the rejected rows); fetched with the caller's identity, handed over as a blob.
  async download(path, fallbackName) {
    const res = await this.send("GET", path);
    const disposition = res.headers.get("Content-Disposition") || "";
    const match = /filename="?([^";]+)"?/.exec(disposition);
    return { blob: await res.blob(), filename: match ? match[1] : fallbackName };
  }
}
