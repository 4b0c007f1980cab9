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
//   IDP_API_AUDIENCE           the sample API's resource indicator (default urn:bff-dev:echo-api, scope
//                              api): access tokens are JWTs for it, so the API can check them offline.
//                              It is the default resource: a request naming none gets a token for it.
//   IDP_REPORTS_AUDIENCE       a second resource server (default urn:bff-dev:reports-api, scope reports),
//                              JWT access tokens too. Any other resource is refused (invalid_target).
//                              A token request (code, refresh) can only name a resource the sign-in named
//                              (RFC 8707 resource parameter(s) in the authorization request; a scope of a
//                              resource, e.g. reports, also names it there). Without `resource`, a token
//                              request gets the echo API's token, unless its scope names only the other
//                              resource's scope (scope=reports): then it gets that resource's token.
//   IDP_JWT_CLIENT_ID          a second client, authenticating with private_key_jwt (RFC 7523) at the
//                              token, revocation and PAR endpoints (default bff-jwt), with the first
//                              client's redirect and logout URIs; registered only when one of the next two
//                              gives its public keys. RS256, PS256 and ES256 (and EdDSA) assertions.
//   IDP_JWT_CLIENT_JWKS_URI    its keys: a URL serving {"keys": [...]} (the BFF's /bff/jwks), fetched on
//                              the first assertion (so it may be down when the IdP starts), then cached
//                              (60 s at least, longer if Cache-Control max-age or Expires say so)
//   IDP_JWT_CLIENT_JWKS_FILE   or its keys from a public JWKS file, read at start (the URI wins if both)
//   IDP_JWT_CLIENT_JWKS_REFETCH  1 (default): an assertion whose kid the cached keys lack makes the IdP
//                              fetch IDP_JWT_CLIENT_JWKS_URI again at once (key rotation, as Keycloak does);
//                              0: oidc-provider's own rule, a refetch only once the cached set is stale
//   IDP_REQUIRE_PAR            1: every client must push its authorization request first (RFC 9126);
//                              otherwise PAR is offered (pushed_authorization_request_endpoint), not required
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
//                              Each line also has grant_type, client_id, the resource and scope the request
//                              named (null when none) and the access token's audience, for every grant:
//                              authorization_code, refresh_token and client_credentials.
//
// Both clients may use the client_credentials grant (one resource per request: `resource`, or a
// scope naming it; the token's sub is then the client id). Refresh tokens are issued only for
// offline_access, which oidc-provider grants only with prompt=consent.
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
const reportsAudience = env.IDP_REPORTS_AUDIENCE || 'urn:bff-dev:reports-api';
// The resource servers (RFC 8707), each with the one scope it knows; the first is the default.
const resourceScopes = new Map([[apiAudience, 'api'], [reportsAudience, 'reports']]);
const accessTokenTTL = Number(env.IDP_ACCESS_TOKEN_TTL || 300);
const words = (value, fallback) => (value || fallback).split(/\s+/).filter(Boolean);

const client = {
  client_id: env.IDP_CLIENT_ID || 'bff',
  client_secret: env.IDP_CLIENT_SECRET || 'dev-secret-change-me',
  redirect_uris: words(env.IDP_REDIRECT_URIS, 'http://localhost:8000/bff/callback'),
  post_logout_redirect_uris: words(env.IDP_POST_LOGOUT_REDIRECT_URIS, 'http://localhost:8000/bff/logged-out'),
  grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
};
const clients = [client];

// The same BFF, authenticating with a signed assertion (private_key_jwt) instead of a secret.
const jwtClientJwksUri = env.IDP_JWT_CLIENT_JWKS_URI;
if (jwtClientJwksUri || env.IDP_JWT_CLIENT_JWKS_FILE) {
  const { client_secret: _secret, ...sameUris } = client;
  clients.push({
    ...sameUris,
    client_id: env.IDP_JWT_CLIENT_ID || 'bff-jwt',
    token_endpoint_auth_method: 'private_key_jwt',
    ...(jwtClientJwksUri
      ? { jwks_uri: jwtClientJwksUri }
      : { jwks: JSON.parse(readFileSync(env.IDP_JWT_CLIENT_JWKS_FILE, 'utf8')) }),
  });
}
if (env.IDP_BACKCHANNEL_LOGOUT_URI) {
  for (const each of clients) {
    each.backchannel_logout_uri = env.IDP_BACKCHANNEL_LOGOUT_URI;
    each.backchannel_logout_session_required = true;
  }
}

// The resources a request's scope names (scope=reports names the reports API).
function resourcesInScope(ctx) {
  const scopes = new Set(String(ctx.oidc.params.scope || '').split(' '));
  return [...resourceScopes].filter(([, scope]) => scopes.has(scope)).map(([resource]) => resource);
}

// The resource of a request that names none (RFC 8707 makes it the server's choice).
async function defaultResource(ctx, _client, oneOf) {
  const named = resourcesInScope(ctx);
  if (oneOf) {
    // A code or refresh grant without `resource`, whose sign-in named several: one of those.
    const chosen = named.filter((resource) => oneOf.includes(resource));
    if (chosen.length === 1) return chosen[0];
    return oneOf.includes(apiAudience) ? apiAudience : oneOf[0];
  }
  if (ctx.oidc.route === 'token') {
    // Client credentials: a single audience.
    return named.length === 1 ? named[0] : apiAudience;
  }
  // An authorization (or pushed) request: the echo API, and any resource its scope names.
  const resources = [apiAudience, ...named.filter((resource) => resource !== apiAudience)];
  return resources.length === 1 ? resources[0] : resources;
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
  clients,
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
    clientCredentials: { enabled: true },
    // RFC 9126; oidc-provider offers it by default, this makes the choice visible.
    pushedAuthorizationRequests: {
      enabled: true,
      requirePushedAuthorizationRequests: env.IDP_REQUIRE_PAR === '1',
    },
    // Every access token is a JWT for one of the sample APIs (RFC 8707 resource indicators, defaulted).
    resourceIndicators: {
      enabled: true,
      defaultResource,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resource) => {
        if (!resourceScopes.has(resource)) throw new errors.InvalidTarget();
        return { scope: resourceScopes.get(resource), audience: resource, accessTokenFormat: 'jwt', accessTokenTTL };
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
    ClientCredentials: accessTokenTTL,
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
  // The same goes for the private_key_jwt client's jwks_uri.
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

// oidc-provider refetches a jwks_uri only once its cached copy is stale (60 s at least): a client
// signing with a key it has just published would fail for up to a minute. Like Keycloak, fetch the
// keys again when an assertion's kid is unknown (once per verification: the retry gives up).
if (jwtClientJwksUri && env.IDP_JWT_CLIENT_JWKS_REFETCH !== '0') {
  const keystore = (await provider.Client.find(clients[1].client_id)).asymmetricKeyStore;
  const select = keystore.selectForVerify;
  let retried = false;
  keystore.selectForVerify = function selectForVerify(options) {
    const keys = select.call(this, options);
    if (keys.length || retried) {
      retried = false;
    } else {
      retried = true;
      this.freshUntil = 0; // stale: oidc-provider's verify refreshes, then looks once more
    }
    return keys;
  };
}

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
    const { AccessToken, ClientCredentials } = ctx.oidc.entities;
    // What the request named (the parsed body: oidc-provider may fill in params.resource itself).
    const requested = ctx.oidc.body || {};
    const issued = {
      grant_type: ctx.oidc.params.grant_type,
      presented_refresh_token: ctx.oidc.params.refresh_token,
      access_token,
      refresh_token,
      id_token,
      client_id: ctx.oidc.client?.clientId,
      resource: requested.resource ?? null,
      scope: requested.scope ?? null,
      audience: (AccessToken || ClientCredentials)?.resourceServer?.audience ?? null,
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
