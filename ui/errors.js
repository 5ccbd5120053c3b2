// Failed answers of the service, and showing a failure on the page (never a blank page).

import { keepToken } from "./session.js";

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

/** Whether a status means the token is missing, wrong, expired or too weak. */
export function isAuthFailure(status) {
  return status === 401 || status === 403;
}

/**
 * Shows an error in `box`. When the failure is about the token, offers a field to
 * paste a read token, kept for this tab only.
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
    keepToken(input.value.trim());
    location.reload();
  });
  box.append(form);
}
