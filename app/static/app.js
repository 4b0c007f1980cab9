// Demo SPA: every call goes to the BFF with `X-CSRF: 1`; the session lives in an HttpOnly cookie
// the script cannot read, and no token ever reaches this page.
"use strict";

const $ = (id) => document.getElementById(id);

async function bff(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    credentials: "same-origin",
    headers: { "X-CSRF": "1", ...(options.headers || {}) },
  });
  const body = await response.json().catch(() => ({}));
  return { status: response.status, body };
}

function show(signedIn) {
  $("signed-in").hidden = !signedIn;
  $("signed-out").hidden = signedIn;
}

async function refresh() {
  const { status, body } = await bff("/bff/user");
  if (status === 200) {
    $("status").textContent = "Signed in.";
    $("user-name").textContent = body.claims.name || body.claims.preferred_username || "";
    $("user-email").textContent = body.claims.email || "";
    $("user-sub").textContent = body.sub;
    $("session-expires").textContent = new Date(body.session.expires_at * 1000).toLocaleString();
    show(true);
  } else if (status === 401) {
    $("status").textContent = "Signed out.";
    show(false);
  } else {
    $("status").textContent = `The BFF answered ${status}: ${body.error_description || body.error || "error"}`;
    show(false);
  }
}

$("login").addEventListener("click", () => {
  const returnUrl = window.location.pathname + window.location.search;
  window.location.assign(`/bff/login?returnUrl=${encodeURIComponent(returnUrl)}`);
});

$("call-api").addEventListener("click", async () => {
  // The BFF adds the access token (refreshing it when due); this page never sees it.
  const { status, body } = await bff("/api/echo/hello?from=spa");
  const result = $("api-result");
  result.hidden = false;
  if (status === 200) {
    result.textContent = `The API says you are ${body.sub}.\n${JSON.stringify({ path: body.path, query: body.query }, null, 2)}`;
  } else if (status === 401) {
    result.textContent = "Your session has ended; please log in again.";
    show(false);
    $("status").textContent = "Signed out.";
  } else {
    result.textContent = `The API call failed (${status}): ${body.error_description || body.error || "error"}`;
  }
});

async function logOut() {
  const { status, body } = await bff("/bff/logout", { method: "POST" });
  if (status === 200 && body.logout_url) {
    window.location.assign(body.logout_url); // ends the IdP session too
  } else {
    $("status").textContent = `Logout failed (${status}).`;
  }
}

$("logout").addEventListener("click", logOut);
$("signout-again").addEventListener("click", logOut);

// After a logout the BFF sends the browser back here with ?signout=<outcome>: what it learnt by
// asking the identity provider (prompt=none) whether its session really ended.
const SIGNOUT_MESSAGES = {
  complete: "You are signed out, here and at the identity provider.",
  idp_session_alive:
    "You are signed out of this app, but the identity provider kept you signed in: " +
    "the next “Log in” would not ask for your password.",
  unconfirmed:
    "You are signed out of this app. Whether the identity provider ended its session too " +
    "could not be confirmed.",
};

function showSignoutOutcome() {
  const params = new URLSearchParams(window.location.search);
  const outcome = params.get("signout");
  const idp = params.get("idp");
  if (!outcome) return;
  params.delete("signout");
  params.delete("idp");
  const query = params.toString();
  // Read once: a reload or a bookmark must not show it again.
  history.replaceState(null, "", window.location.pathname + (query ? `?${query}` : "") + window.location.hash);
  $("signout-message").textContent = SIGNOUT_MESSAGES[outcome] || SIGNOUT_MESSAGES.unconfirmed;
  $("signout-notice").className = outcome === "idp_session_alive" ? "warning" : "";
  $("signout-notice").hidden = false;
  if (outcome === "idp_session_alive") {
    $("signout-again").textContent = `Sign out at ${idp || "the identity provider"}`;
    $("signout-again").hidden = false;
  }
}

showSignoutOutcome();
refresh();
