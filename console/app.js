// The console's shell: login, navigation (hash routes, so a reload or a
// bookmark lands on the same page), and the live event stream handed to
// whichever view is showing.

import { api, session, LiveEvents, fill, h, showError } from "./lib.js";
import { routes } from "./views.js";

const main = document.getElementById("main");
const loginSection = document.getElementById("login");
const loginForm = document.getElementById("login-form");
const loginError = document.getElementById("login-error");
const shell = document.getElementById("shell");
const liveState = document.getElementById("live-state");
const who = document.getElementById("who");

let current = null; // { onEvent, onReconnect, dispose }
let live = null;

function setLive(state) {
  liveState.dataset.state = state;
  fill(liveState, state === "live" ? "Live" : "Reconnecting…");
}

function startLive() {
  if (live) live.stop();
  live = new LiveEvents(
    (name, data) => {
      if (current && current.onEvent) current.onEvent(name, data);
    },
    setLive,
  );
  live.onReconnect = () => {
    if (current && current.onReconnect) current.onReconnect();
  };
  live.start();
}

function showLogin(message) {
  if (live) live.stop();
  live = null;
  shell.hidden = true;
  loginSection.hidden = false;
  showError(loginError, message ? { message } : null);
  document.getElementById("login-email").focus();
}

async function showConsole() {
  try {
    const me = await api("GET", "/api/auth/me");
    if (me.data.role !== "admin") {
      session.token = null;
      showLogin("This account is not an operator (admin).");
      return;
    }
    fill(who, me.data.email || me.data.id);
  } catch {
    showLogin();
    return;
  }
  loginSection.hidden = true;
  shell.hidden = false;
  startLive();
  route();
}

session.onLoggedOut = () => showLogin("Your session ended; log in again.");

loginForm.addEventListener("submit", async (e) => {
  e.preventDefault();
  const button = loginForm.querySelector("button[type=submit]");
  button.disabled = true;
  showError(loginError);
  try {
    const body = await api("POST", "/api/auth/login", {
      email: loginForm.elements.email.value,
      password: loginForm.elements.password.value,
    });
    if (body.data.user.role !== "admin") {
      showError(loginError, { message: "This account is not an operator (admin)." });
      return;
    }
    session.token = body.data.token;
    loginForm.reset();
    await showConsole();
  } catch (error) {
    showError(loginError, error.status === 401 ? { message: "Wrong email or password." } : error);
  } finally {
    button.disabled = false;
  }
});

document.getElementById("logout").addEventListener("click", () => {
  session.token = null;
  showLogin();
});

/** `#/chargers/CP-1?x=y` → { parts: ["chargers", "CP-1"], params }. */
function parseHash() {
  const hash = location.hash.replace(/^#\/?/, "") || "chargers";
  const [path, query] = hash.split("?");
  return {
    parts: path.split("/").filter(Boolean).map(decodeURIComponent),
    params: new URLSearchParams(query || ""),
  };
}

async function route() {
  if (shell.hidden) return;
  if (current && current.dispose) current.dispose();
  current = null;
  const { parts, params } = parseHash();
  const key = parts[0];
  const view = routes[key] || routes.chargers;
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.getAttribute("href") === `#/${key}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  fill(main, h("p", { class: "muted" }, "Loading…"));
  try {
    const mine = {};
    current = mine;
    const handlers = await view(main, parts.slice(1), params);
    if (current === mine) Object.assign(mine, handlers || {});
  } catch (error) {
    fill(main, h("h1", {}, "Something went wrong"), h("p", { role: "alert" }, error.message || String(error)));
  }
  const heading = main.querySelector("h1");
  if (heading) {
    heading.tabIndex = -1;
    heading.focus({ preventScroll: true });
  }
}

window.addEventListener("hashchange", route);

if (session.token) showConsole();
else showLogin();
