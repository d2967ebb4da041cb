// The console's shell: sign-in (a token from the link's fragment, or
// pasted), the header (user and tenant from /api/v1/me), the connection
// banner, and the views, one per `#/name` route. Views get the HTTP client
// and the tab's one WebSocket; state flows from the server's frames into
// each view's store, and from there to the page.

import { Api } from "./api.js";
import { LiveSocket } from "./ws.js";
import { h, fill, field, notice } from "./dom.js";
import * as metrics from "./views/metrics.js";
import * as jobs from "./views/jobs.js";
import * as dashboards from "./views/dashboards.js";
import * as alerts from "./views/alerts.js";
import * as analyses from "./views/analyses.js";

const TOKEN_KEY = "sextant.token";
const VIEWS = { metrics, dashboards, alerts, jobs, analyses };
const DEFAULT_VIEW = "metrics";

const root = document.getElementById("app");
let session = null;

/** A token in the address (`#token=…`) moves to sessionStorage and leaves the address bar. */
function tokenFromAddress() {
  const match = location.hash.match(/^#token=([^&]+)/);
  if (!match) return null;
  const token = decodeURIComponent(match[1]);
  history.replaceState(null, "", `${location.pathname}#/${DEFAULT_VIEW}`);
  return token;
}

function signOut(reason) {
  sessionStorage.removeItem(TOKEN_KEY);
  session?.live.close();
  session?.unmount?.();
  session = null;
  showSignIn(reason);
}

function showSignIn(reason) {
  const input = h("textarea", { id: "token", name: "token", rows: 4, required: true, autocomplete: "off",
    spellcheck: "false", placeholder: "eyJ…" });
  const form = h("form", { class: "signin", onsubmit: (e) => {
    e.preventDefault();
    const token = input.value.trim();
    if (token) start(token);
  } },
  h("h1", {}, "Sextant"),
  reason ? notice("error", reason) : null,
  field("Bearer token", input),
  h("button", { type: "submit" }, "Sign in"),
  h("p", { class: "hint" }, h("code", {}, "make run"), " prints a link that signs you in."));
  fill(root, form);
  input.focus();
}

async function start(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  const api = new Api(token, (error) => signOut(`Signed out: ${error.message}`));
  let me;
  try {
    me = await api.me();
  } catch (error) {
    if (error.status !== 401) showSignIn(`The gateway answered: ${error.message}`);
    return;
  }
  const banner = h("div", { class: "banner", role: "status", hidden: true });
  const nav = h("nav", { "aria-label": "views" }, Object.keys(VIEWS).map((name) =>
    h("a", { href: `#/${name}`, dataset: { view: name } }, name[0].toUpperCase() + name.slice(1))));
  const main = h("main", { id: "view", tabindex: "-1" });
  const header = h("header", { class: "top" },
    h("span", { class: "brand" }, "Sextant"),
    nav,
    h("span", { class: "who" }, h("span", { class: "user" }, me.user), " @ ", h("span", { class: "tenant" }, me.tenant)),
    h("button", { type: "button", class: "link", onclick: () => signOut("Signed out.") }, "Sign out"));
  fill(root, header, banner, main);
  let downs = 0;
  const live = new LiveSocket(token, async (state) => {
    if (state.up) {
      downs = 0;
      banner.hidden = true;
      return;
    }
    downs += 1;
    banner.hidden = false;
    fill(banner, `Reconnecting… (${state.reason})`);
    // A refused upgrade looks like any dropped connection: ask the API
    // whether the token is still good.
    if (downs >= 2) await api.me().catch(() => {});
  });
  session = { api, live, main, nav, unmount: null };
  route();
}

function route() {
  if (!session) return;
  const name = (location.hash.match(/^#\/([a-z]+)/) || [])[1] || DEFAULT_VIEW;
  const view = VIEWS[name] || VIEWS[DEFAULT_VIEW];
  session.unmount?.();
  for (const a of session.nav.querySelectorAll("a")) {
    if (a.dataset.view === name) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  fill(session.main);
  session.unmount = view.mount(session.main, { api: session.api, live: session.live });
}

window.addEventListener("hashchange", () => {
  const token = tokenFromAddress();
  if (token) start(token); else route();
});

const token = tokenFromAddress() || sessionStorage.getItem(TOKEN_KEY);
if (token) start(token); else showSignIn();
