// Shared by the viewer pages: the session token, authorised fetches, error display.
//
// The token arrives once as `?token=` in a link printed by the CLI. It is moved to
// sessionStorage (gone when the tab closes) and removed from the address bar, so it
// does not linger in history, bookmarks or a copied URL. EventSource cannot send an
// Authorization header, which is why every read goes through fetch().

const TOKEN_KEY = "runlog.token";
const ACCOUNT_KEY = "runlog.account";

/**
 * The claims of a runlog token (`base64url(JSON).signature`), unverified: the page
 * only uses them to refuse the wrong kind of token and to find the account; the
 * service verifies every request. Null when the token has another shape.
 */
export function tokenClaims(token) {
  try {
    const body = token.split(".")[0].replaceAll("-", "+").replaceAll("_", "/");
    const claims = JSON.parse(atob(body + "=".repeat((4 - (body.length % 4)) % 4)));
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

/**
 * Moves `?token=` into sessionStorage and returns the session's token (or null).
 * A link may only carry a read token: links get pasted into chats and histories.
 * A write or admin token in a link is dropped (and reported through `linkRefusal`)
 * so the page never holds more power than reading needs.
 */
export let linkRefusal = null;
export function takeToken() {
  const url = new URL(location.href);
  const fromLink = url.searchParams.get("token");
  if (fromLink !== null) {
    url.searchParams.delete("token");
    history.replaceState(history.state, "", url.pathname + url.search + url.hash);
    const scope = tokenClaims(fromLink)?.scope;
    if (scope && scope !== "read") {
      linkRefusal = `This link carries a ${scope} token. Links must carry read tokens only; the token was not used. Paste a read token instead.`;
    } else if (fromLink) {
      sessionStorage.setItem(TOKEN_KEY, fromLink);
    }
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

/** The account to show: `?accountID=`, the one remembered for this tab, or the token's. */
export function takeAccount() {
  const fromUrl = new URL(location.href).searchParams.get("accountID");
  if (fromUrl) {
    sessionStorage.setItem(ACCOUNT_KEY, fromUrl);
    return fromUrl;
  }
  const remembered = sessionStorage.getItem(ACCOUNT_KEY);
  if (remembered) return remembered;
  const token = sessionStorage.getItem(TOKEN_KEY);
  const account = token ? tokenClaims(token)?.account : null;
  return typeof account === "string" ? account : null;
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
