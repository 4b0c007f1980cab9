// Development and test identity provider for the BFF.
//
// A thin configuration of `oidc-provider` (OpenID Certified). Any login name and any password
// sign in; the login name becomes the subject. Everything is read from the environment so that
// `make run` and the test fixtures can place it on any port, under any issuer path.
//
//   IDP_ISSUER                 issuer URL, may carry a path (default http://127.0.0.1:9000/realms/dev)
//   IDP_PORT                   listening port (default: the issuer's port)
//   IDP_CLIENT_ID              default bff
//   IDP_CLIENT_SECRET          default dev-secret-change-me
//   IDP_REDIRECT_URIS          space-separated (default http://localhost:8000/bff/callback)
//   IDP_POST_LOGOUT_REDIRECT_URIS  space-separated (default http://localhost:8000/bff/logged-out)
//   IDP_BACKCHANNEL_LOGOUT_URI optional back-channel logout endpoint of the BFF
//   IDP_ACCESS_TOKEN_TTL       seconds (default 300)
//   IDP_API_AUDIENCE           the sample API's resource indicator (default urn:bff-dev:echo-api):
//                              access tokens are JWTs for it, so the API can check them offline
//   IDP_END_SESSION_POST       1: accept POST at the end-session endpoint (needs https in a browser)
//   IDP_JWKS_FILE              tests only: the signing keys (a private JWKS), so a test can also sign
//                              tokens this IdP would accept, such as forged logout tokens
//   IDP_TOKEN_DELAY_MS         tests only: answer the token endpoint this much later, as a
//                              distant IdP would (widens the window a refresh race needs)
//   IDP_HOLD_DIR               tests only: while the file <dir>/hold exists, a refresh's answer is held
//                              back after the tokens are issued (and <dir>/held is written), so a
//                              test can end the session while a refresh is in flight, then release it
//   IDP_ISSUED_TOKENS_FILE     tests only: append every token response here, one JSON per line
//                              (with the refresh token a refresh presented), so a test can prove
//                              that no issued token leaks out of the BFF, and none is spent twice.
import { setDefaultResultOrder } from 'node:dns';
import { appendFileSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider, { errors } from 'oidc-provider';

// The BFF listens on 127.0.0.1 in development; Node would otherwise try ::1 first for localhost.
setDefaultResultOrder('ipv4first');

const env = process.env;
const issuer = new URL(env.IDP_ISSUER || 'http://127.0.0.1:9000/realms/dev');
const mountPath = issuer.pathname.replace(/\/$/, '');
const port = Number(env.IDP_PORT || issuer.port || 80);
const apiAudience = env.IDP_API_AUDIENCE || 'urn:bff-dev:echo-api';
const accessTokenTTL = Number(env.IDP_ACCESS_TOKEN_TTL || 300);
const words = (value, fallback) => (value || fallback).split(/\s+/).filter(Boolean);

const client = {
  client_id: env.IDP_CLIENT_ID || 'bff',
  client_secret: env.IDP_CLIENT_SECRET || 'dev-secret-change-me',
  redirect_uris: words(env.IDP_REDIRECT_URIS, 'http://localhost:8000/bff/callback'),
  post_logout_redirect_uris: words(env.IDP_POST_LOGOUT_REDIRECT_URIS, 'http://localhost:8000/bff/logged-out'),
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
};
if (env.IDP_BACKCHANNEL_LOGOUT_URI) {
  client.backchannel_logout_uri = env.IDP_BACKCHANNEL_LOGOUT_URI;
  client.backchannel_logout_session_required = true;
}

// A readable profile for any login name, so the demo SPA has something to show.
async function findAccount(_ctx, accountId) {
  const name = accountId.charAt(0).toUpperCase() + accountId.slice(1);
  return {
    accountId,
    async claims() {
      return {
        sub: accountId,
        name,
        preferred_username: accountId,
        email: `${accountId}@example.com`,
        email_verified: true,
      };
    },
  };
}

const configuration = {
  clients: [client],
  findAccount,
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
  },
  scopes: ['openid', 'offline_access', 'profile', 'email'],
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    backchannelLogout: { enabled: true },
    revocation: { enabled: true },
    userinfo: { enabled: true },
    // Every access token is a JWT for the sample API (RFC 8707 resource indicators, defaulted).
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => apiAudience,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resource) => {
        if (resource !== apiAudience) throw new errors.InvalidTarget();
        return { scope: 'api', audience: apiAudience, accessTokenFormat: 'jwt', accessTokenTTL };
      },
    },
  },
  // Profile claims go into the id token too: userinfo only serves access tokens meant for the IdP.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  // Refresh tokens rotate: reusing an old one revokes the whole grant, like strict IdPs do.
  rotateRefreshToken: true,
  // oidc-provider's own, strict rule is kept: offline_access (so a refresh token) only with
  // prompt=consent (OpenID Connect Core §11). The BFF asks for it with BFF_OIDC_PROMPT=consent.
  ttl: {
    AccessToken: accessTokenTTL,
    AuthorizationCode: 60,
    IdToken: 3600,
    RefreshToken: 24 * 3600,
    Grant: 24 * 3600,
    Session: 24 * 3600,
    Interaction: 3600,
  },
  cookies: { keys: ['dev-idp-cookie-key-not-secret'] },
  // The BFF listens on loopback during development and tests. oidc-provider hands its fetch an
  // SSRF-guarding dispatcher that refuses loopback addresses (back-channel logout); drop it.
  fetch: (url, { dispatcher: _ssrfGuard, ...options }) => globalThis.fetch(url, options),
};

// RP-Initiated Logout by POST (the BFF's form_post mode). oidc-provider allows it only with its
// session cookie SameSite=None, since a cross-site POST carries no Lax cookie; browsers keep such a
// cookie only with Secure, i.e. over https. Off by default so that plain-http development works.
if (env.IDP_END_SESSION_POST === '1') {
  configuration.enableHttpPostMethods = true;
  configuration.cookies.long = { httpOnly: true, sameSite: 'none' };
}

if (env.IDP_JWKS_FILE) {
  configuration.jwks = JSON.parse(readFileSync(env.IDP_JWKS_FILE, 'utf8'));
}

const provider = new Provider(issuer.href.replace(/\/$/, ''), configuration);
provider.proxy = true;

const tokenDelay = Number(env.IDP_TOKEN_DELAY_MS || 0);
if (tokenDelay) {
  provider.use(async (ctx, next) => {
    if (ctx.path === '/token') await new Promise((resolve) => setTimeout(resolve, tokenDelay));
    await next();
  });
}

if (env.IDP_HOLD_DIR) {
  const hold = `${env.IDP_HOLD_DIR}/hold`;
  const held = `${env.IDP_HOLD_DIR}/held`;
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.path !== '/token' || ctx.oidc?.params?.grant_type !== 'refresh_token' || !existsSync(hold)) return;
    writeFileSync(held, '');
    while (existsSync(hold)) await new Promise((resolve) => setTimeout(resolve, 5));
    rmSync(held, { force: true });
  });
}

if (env.IDP_ISSUED_TOKENS_FILE) {
  provider.on('grant.success', (ctx) => {
    const { access_token, refresh_token, id_token } = ctx.body || {};
    const issued = {
      grant_type: ctx.oidc.params.grant_type,
      presented_refresh_token: ctx.oidc.params.refresh_token,
      access_token,
      refresh_token,
      id_token,
    };
    appendFileSync(env.IDP_ISSUED_TOKENS_FILE, `${JSON.stringify(issued)}\n`);
  });
}
for (const event of ['server_error', 'backchannel.error']) {
  provider.on(event, (_ctx, error) => console.error(`idp ${event}: ${error?.message || error}`));
}

const callback = provider.callback();
const server = createServer((req, res) => {
  // Mount the provider under the issuer's path, as Keycloak does with /realms/<name>.
  if (mountPath && !(req.url === mountPath || req.url.startsWith(`${mountPath}/`))) {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
    return;
  }
  req.originalUrl = req.url;
  req.url = req.url.slice(mountPath.length) || '/';
  callback(req, res);
});

server.listen(port, issuer.hostname, () => {
  console.log(`dev IdP listening: issuer ${provider.issuer} (any login name, any password)`);
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
