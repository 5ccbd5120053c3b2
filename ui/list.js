// The streams of the token's account, newest activity first; refreshed while visible.

import { takeToken, takeAccount, authHeaders } from "./session.js";
import { errorMessage, showError, isAuthFailure } from "./errors.js";
import { ago } from "./time.js";

const REFRESH_MS = 5000;
const $ = (id) => document.getElementById(id);
const table = $("streams");
const tbody = table.querySelector("tbody");
const errorBox = $("error");
const statusEl = $("status");

const { token, refusal } = takeToken();
const account = takeAccount();
$("account").value = account || "";

function cell(text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  return td;
}

function show(streams) {
  streams.sort((a, b) => String(b.last_activity).localeCompare(String(a.last_activity)));
  const rows = streams.map((s) => {
    const tr = document.createElement("tr");
    const keyCell = document.createElement("td");
    const a = document.createElement("a");
    a.href = `/ui/stream?accountID=${encodeURIComponent(account)}&key=${encodeURIComponent(s.key)}`;
    a.textContent = s.key;
    keyCell.append(a);
    const state = s.open ? "open" : s.archived ? "archived" : "closed";
    const stateCell = cell(state, "state state-" + state);
    const when = cell(ago(s.last_activity, Date.now()));
    when.title = s.last_activity;
    tr.append(keyCell, stateCell, cell(Number(s.lines).toLocaleString("en"), "num"), when);
    return tr;
  });
  tbody.replaceChildren(...rows);
  table.hidden = rows.length === 0;
  $("empty").hidden = rows.length !== 0;
  statusEl.textContent = `${rows.length} streams · updated ${new Date().toLocaleTimeString()}`;
}

async function refresh() {
  let resp;
  try {
    resp = await fetch(`/streams?accountID=${encodeURIComponent(account)}`, { headers: authHeaders(), cache: "no-store" });
  } catch (e) {
    statusEl.textContent = "cannot reach the log service; retrying";
    return true;
  }
  if (!resp.ok) {
    showError(errorBox, await errorMessage(resp), { askToken: isAuthFailure(resp.status) });
    table.hidden = true;
    return false; // a refused token will not start working by itself
  }
  errorBox.hidden = true;
  try {
    show(await resp.json());
  } catch {
    showError(errorBox, "The service answered with something that is not a stream list.");
  }
  return true;
}

async function loop() {
  if (document.visibilityState === "visible" && !(await refresh())) return;
  setTimeout(loop, REFRESH_MS);
}

$("account-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const value = $("account").value.trim();
  if (value) location.search = "?accountID=" + encodeURIComponent(value);
});

if (refusal) {
  showError(errorBox, refusal, { askToken: true });
} else if (!account) {
  statusEl.textContent = "Enter an account to list its streams.";
  $("account").focus();
} else if (!token) {
  showError(errorBox, "A read token is needed to list this account's streams.", { askToken: true });
} else {
  loop();
}
