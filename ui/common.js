// Shared by the viewer pages: the session token, authorised fetches, error display.
//
// The token arrives once as `?token=` in a link printed by the CLI. It is moved to
// sessionStorage (gone when the tab closes) and removed from the address bar, so it
// does not linger in history, bookmarks or a copied URL. EventSource cannot send an
// Authorization header, which is why every read goes through fetch().

const TOKEN_KEY = "runlog.token";
const ACCOUNT_KEY = "runlog.account";

/** Moves `?token=` into sessionStorage and returns the session's token (or null). */
export function takeToken() {
  const url = new URL(location.href);
  const fromLink = url.searchParams.get("token");
  if (fromLink !== null) {
    if (fromLink) sessionStorage.setItem(TOKEN_KEY, fromLink);
    url.searchParams.delete("token");
    history.replaceState(history.state, "", url.pathname + url.search + url.hash);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

/** The account to show: `?accountID=` or the one remembered for this tab. */
export function takeAccount() {
  const fromUrl = new URL(location.href).searchParams.get("accountID");
  if (fromUrl) {
    sessionStorage.setItem(ACCOUNT_KEY, fromUrl);
    return fromUrl;
  }
  return sessionStorage.getItem(ACCOUNT_KEY);
}

/** Request headers carrying the session token. */
export function authHeaders(extra = {}) {
  const headers = { ...extra };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  return headers;
}

/** The service's `error_msg` of a failed answer, or its status line. */
export async function errorMessage(resp) {
  let detail = "";
  try {
    const text = await resp.text();
    try {
      detail = JSON.parse(text).error_msg || text;
    } catch {
      detail = text;
    }
  } catch {
    // The body could not be read; the status alone has to do.
  }
  detail = String(detail).slice(0, 300);
  return `${resp.status} ${resp.statusText}${detail ? ": " + detail : ""}`;
}

/**
 * Shows an error in `box` (never a blank page). When the failure is about the
 * token, offers a field to paste a read token, kept for this tab only.
 */
export function showError(box, message, { askToken = false } = {}) {
  box.replaceChildren();
  box.hidden = false;
  const p = document.createElement("p");
  p.className = "error-text";
  p.textContent = message;
  box.append(p);
  if (!askToken) return;
  const form = document.createElement("form");
  form.className = "token-form";
  const label = document.createElement("label");
  label.textContent = "Read token ";
  const input = document.createElement("input");
  input.type = "password";
  input.name = "token";
  input.autocomplete = "off";
  input.required = true;
  label.append(input);
  const button = document.createElement("button");
  button.type = "submit";
  button.textContent = "Use token";
  form.append(label, " ", button);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    location.reload();
  });
  box.append(form);
}

/** Whether a status means the token is missing, wrong, expired or too weak. */
export function isAuthFailure(status) {
  return status === 401 || status === 403;
}
