// The reader's token and account for this tab.
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
 * Why a link's token was not used, or null: a link may only carry a read token, since
 * links get pasted into chats and histories, so the page never holds more power than
 * reading needs.
 */
export function refusalOf(token) {
  const scope = tokenClaims(token)?.scope;
  return scope && scope !== "read"
    ? `This link carries a ${scope} token. Links must carry read tokens only; the token was not used. Paste a read token instead.`
    : null;
}

/**
 * Moves `?token=` into sessionStorage. Returns the session's token (null if none) and
 * `refusal`: why a token in the link was dropped (null if none was).
 */
export function takeToken() {
  const url = new URL(location.href);
  const fromLink = url.searchParams.get("token");
  let refusal = null;
  if (fromLink !== null) {
    url.searchParams.delete("token");
    history.replaceState(history.state, "", url.pathname + url.search + url.hash);
    refusal = refusalOf(fromLink);
    if (!refusal && fromLink) keepToken(fromLink);
  }
  return { token: sessionStorage.getItem(TOKEN_KEY), refusal };
}

/** Keeps `token` for this tab (a token the reader pasted). */
export function keepToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
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
