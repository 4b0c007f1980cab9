"""The nginx configuration for running behind nginx with TLS, written from the BFF's own settings
(`flask --app wsgi nginx-config`), so that the API locations and header rules never drift from
`BFF_API_UPSTREAMS` and `proxy_headers.py`. Pure: settings and options in, text out.

Two proxy modes for `/api/<name>/` (README, "Deploying behind nginx"):
- `offload`: nginx asks `GET /bff/authz` (`auth_request`) and proxies to the upstream itself with
  the `Authorization` value, upstream path and cookies the BFF answered. Any refusal (and any error
  nginx meets) goes to the BFF's Python proxy instead, which answers the same request with the
  exact `/api` status and JSON body, or serves it if it has become fine meanwhile.
- `python`: `/api/` goes to the BFF like everything else.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from .config import Settings
from .proxy_headers import FORWARDED_REQUEST_HEADERS, NEVER_RELAYED
from .security import STRICT_HTML_CSP
from .upstreams import Upstream

MODES = ("offload", "python")
# Mozilla's "intermediate" TLS configuration (https://ssl-config.mozilla.org, version 5.7).
TLS_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
)
# nginx hides no prefix, so the `access-control-*`, `cross-origin-*` and `x-accel-*` families
# of proxy_headers.NEVER_RELAYED_PREFIXES are spelled out.
HIDDEN_FAMILIES = (
    "Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Access-Control-Allow-Headers",
    "Access-Control-Allow-Methods", "Access-Control-Expose-Headers", "Access-Control-Max-Age",
    "Cross-Origin-Opener-Policy", "Cross-Origin-Embedder-Policy", "Cross-Origin-Resource-Policy",
    "CDN-Cache-Control", "Cache-Control",
    # Not on proxy_headers' allow-list, so the Python proxy drops them too; `Location` is mapped
    # below as proxy_headers.mapped_location maps it, `Content-Security-Policy` set for HTML.
    "Location", "WWW-Authenticate", "Link", "Accept-CH", "Critical-CH", "Permissions-Policy",
    "Document-Policy", "X-Powered-By", "Server", "Server-Timing", "Timing-Allow-Origin", "Content-Location",
)  # fmt: skip
NGINX_HEADER = re.compile(r"[a-z0-9-]+")  # what `$http_<name>` can name


@dataclass(frozen=True)
class NginxOptions:
    bff_address: str = "127.0.0.1:8000"  # where gunicorn listens
    listen: int = 443
    http_redirect_port: int | None = 80  # plain-http port that redirects to https (None: none)
    certificate: str = "/etc/nginx/tls/bff.crt"
    certificate_key: str = "/etc/nginx/tls/bff.key"
    mode: str = "offload"
    # Sign-in starts per second per client address (0: no limit), each a pushed authorization
    # request to the IdP when it offers PAR; a burst of four times as many passes at once.
    sign_in_rate: int = 5


def render(settings: Settings, options: NginxOptions) -> str:
    """The whole `http`-level configuration: upstream blocks, then the server."""
    host = urlsplit(settings.public_url).hostname or "localhost"
    offload = options.mode == "offload"
    lines = [
        f"# Written by `flask --app wsgi nginx-config` for {settings.public_url}: regenerate it when",
        "# BFF_API_UPSTREAMS changes, do not edit it by hand. Include it in nginx's `http` block.",
    ]
    if offload and settings.authz_secret:
        lines.append("# It holds BFF_AUTHZ_SECRET: readable by root and nginx only (chmod 600).")
    if options.sign_in_rate:
        lines += [
            "",
            "# /bff/login and /bff/logged-out per client address: an anonymous flood must not become as",
            "# many requests to the IdP (with PAR, each sign-in start is one, with the client's credentials).",
            f"limit_req_zone $binary_remote_addr zone=bff_sign_in:10m rate={options.sign_in_rate}r/s;",
        ]
    lines += [
        "",
        "upstream bff_app {",
        f"    server {options.bff_address};",
        "    keepalive 32;  # kept-alive connections to gunicorn: no TCP set-up per request",
        "}",
    ]
    if offload:
        for name, upstream in sorted(settings.api_upstreams.items()):
            parts = urlsplit(upstream.url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            lines += [
                "",
                f"upstream bff_api_{_ident(name)} {{",
                f"    server {parts.hostname}:{port};",
                "    keepalive 16;",
                "}",
            ]
            lines += _location_map(name, upstream)
        lines += _cache_control_map()
    if options.http_redirect_port:
        lines += [
            "",
            "server {",
            f"    listen {options.http_redirect_port};",
            f"    server_name {host};",
            "    return 308 https://$host$request_uri;",
            "}",
        ]
    lines += _server(settings, options, host, offload)
    return "\n".join(lines) + "\n"


def _server(settings: Settings, options: NginxOptions, host: str, offload: bool) -> list[str]:
    body_limit = max(settings.api_max_body, 64 * 1024)
    public = urlsplit(settings.public_url).netloc
    lines = [
        "",
        "server {",
        f"    listen {options.listen} ssl http2;",
        f"    server_name {host};",
        f"    ssl_certificate {options.certificate};",
        f"    ssl_certificate_key {options.certificate_key};",
        "    ssl_protocols TLSv1.2 TLSv1.3;",
        f"    ssl_ciphers {TLS_CIPHERS};",
        "    ssl_prefer_server_ciphers off;",
        "    ssl_session_cache shared:bff_tls:10m;",
        "    ssl_session_timeout 1d;",
        "    ssl_session_tickets off;",
        "",
        "    # Slow clients wait on nginx, never on a gunicorn thread: nginx reads the whole request",
        "    # (headers within 10 s, the body at 10 s per read) before it opens an upstream request,",
        "    # and buffers the answer so the thread is free before the client has read it.",
        "    client_header_timeout 10s;",
        "    client_body_timeout 10s;",
        "    send_timeout 30s;",
        "    keepalive_timeout 30s;",
        f"    client_max_body_size {body_limit};  # BFF_API_MAX_BODY; the BFF checks its own limits too",
        "    proxy_request_buffering on;",
        "    proxy_buffering on;",
        "    # Header sizes: the session cookie is about 70 bytes, each sign-in attempt cookie at most",
        "    # ~1.8 KB (three at most), so a browser's Cookie line stays under 8 KB; 16 KB matches",
        "    # gunicorn's limit_request_field_size, for an SPA that sets cookies of its own.",
        "    client_header_buffer_size 4k;",
        "    large_client_header_buffers 8 16k;",
        "    # The BFF's answers carry at most 4 Set-Cookie lines of ~1.9 KB (the sign-in redirect).",
        "    proxy_buffer_size 16k;",
        "    proxy_buffers 8 16k;",
        "    proxy_busy_buffers_size 32k;",
        "",
        "    proxy_http_version 1.1;",
        '    proxy_set_header Connection "";',
        "    proxy_read_timeout 60s;",
        "    # No client may pose as nginx towards /bff/authz.",
        '    proxy_set_header X-BFF-Authz-Secret "";',
        "    # The public host, never the one a client sent (Host, or an absolute-form target).",
        f"    proxy_set_header Host {public};",
        "    proxy_set_header X-Forwarded-For $remote_addr;  # BFF_TRUSTED_PROXIES=1",
        "    proxy_set_header X-Forwarded-Proto https;",
        f"    proxy_set_header X-Forwarded-Host {public};",
        "    proxy_set_header X-Request-ID $request_id;",
        "",
        "    location / {",
        "        proxy_pass http://bff_app;",
        "    }",
    ]
    if options.sign_in_rate:
        lines += [
            "",
            "    # Sign-in starts, in every spelling the BFF serves (Flask takes a trailing slash, and",
            "    # %2F arrives decoded), and the returns from logouts, which start a sign-in check.",
            "    location ~ ^/bff/(login|logged-out)/*$ {",
            f"        limit_req zone=bff_sign_in burst={4 * options.sign_in_rate} nodelay;",
            "        limit_req_status 429;",
            "        error_page 429 = @bff_too_many_sign_ins;",
            "        proxy_pass http://bff_app;",
            "    }",
            *_static_error("@bff_too_many_sign_ins", 429, "too_many_requests", "Too many sign-ins; try again shortly."),
        ]
    if offload and settings.authz_secret:
        lines += [
            "",
            "    # nginx's own question to the BFF: never reachable from outside (`internal`).",
            "    location = /_bff_authz {",
            "        internal;",
            "        proxy_pass http://bff_app/bff/authz;",
            "        proxy_pass_request_body off;",
            '        proxy_set_header Content-Length "";',
            "        proxy_set_header X-Original-URI $request_uri;",
            f'        proxy_set_header X-BFF-Authz-Secret "{settings.authz_secret}";',
            "        proxy_set_header Connection \"\";  # (a location's own headers replace the server's)",
            f"        proxy_set_header Host {public};",
            "        proxy_set_header X-Forwarded-For $remote_addr;",
            "        proxy_set_header X-Forwarded-Proto https;",
            f"        proxy_set_header X-Forwarded-Host {public};",
            "        proxy_set_header X-Request-ID $request_id;",
            "    }",
            "",
            "    # What /bff/authz refused (401, 403, and its other statuses, which auth_request turns",
            "    # into 500): the BFF's Python proxy answers the same request with the exact /api status",
            "    # and JSON body (or serves it, if it has become fine meanwhile: nginx sent nothing yet).",
            "    location @bff_python_proxy {",
            "        # Set only once /bff/authz said yes: nginx may then have sent the request upstream",
            "        # already, so it must never go a second time (a POST charged twice).",
            "        if ($bff_upstream_path) {",
            f"            return 502 '{_json_error('upstream_unavailable', 'The API could not be reached.')}';",
            "        }",
            "        proxy_pass http://bff_app;",
            "    }",
            "",
            "    # Errors nginx meets itself on an API call, in the BFF's JSON (never sent anywhere again).",
            *_static_error("@bff_api_unavailable", 502, "upstream_unavailable", "The API could not be reached."),
            *_static_error("@bff_api_timeout", 504, "upstream_timeout", "The API did not answer in time."),
            *_static_error("@bff_api_bad_request", 400, "bad_request", "The request is malformed."),
            *_static_error("@bff_api_too_large", 413, "request_too_large", "The request body is too large."),
        ]
        for name, upstream in sorted(settings.api_upstreams.items()):
            lines += _api_location(name, upstream, settings, public)
    return [*lines, "}"]


def _api_location(name: str, upstream: Upstream, settings: Settings, public: str) -> list[str]:
    parts = urlsplit(upstream.url)
    scheme = parts.scheme
    # Neither set holds a hop-by-hop header or Content-Length (upstreams.py refuses them).
    allowed = sorted(FORWARDED_REQUEST_HEADERS | upstream.forward_headers)
    if odd := [h for h in allowed if not NGINX_HEADER.fullmatch(h)]:
        raise ValueError(f"{name}: nginx cannot forward {odd[0]!r} by name (letters, digits and '-' only)")
    forwarded = [f"        proxy_set_header {_title(h)} $http_{h.replace('-', '_')};" for h in allowed]
    hidden = sorted({_title(h) for h in NEVER_RELAYED - {"connection", "keep-alive", "transfer-encoding"}})
    hidden += HIDDEN_FAMILIES
    lines = [
        "",
        f"    location /api/{name}/ {{",
        "        auth_request /_bff_authz;",
        "        auth_request_set $bff_authorization $upstream_http_x_bff_authorization;",
        "        auth_request_set $bff_upstream_path $upstream_http_x_bff_upstream_path;",
        "        auth_request_set $bff_upstream_cookie $upstream_http_x_bff_upstream_cookie;",
        "        error_page 401 403 500 = @bff_python_proxy;",
        "        error_page 502 503 = @bff_api_unavailable;",
        "        error_page 504 = @bff_api_timeout;",
        "        error_page 400 = @bff_api_bad_request;",
        "        error_page 413 = @bff_api_too_large;",
        f"        client_max_body_size {settings.api_max_body};  # BFF_API_MAX_BODY",
        "        # The Python proxy's methods; any other is refused (403, answered by the fallback: 405).",
        "        limit_except GET HEAD POST PUT PATCH DELETE OPTIONS { deny all; }",
        "        # The path the BFF checked, byte for byte (nginx's own would be decoded and merged).",
        f"        proxy_pass {scheme}://bff_api_{_ident(name)}$bff_upstream_path;",
        "        proxy_redirect off;",
        "        # Request headers: an allow-list (proxy_headers.py), as the Python proxy sends them.",
        "        proxy_pass_request_headers off;",
        *forwarded,
        '        proxy_set_header Connection "";',
        f"        proxy_set_header Host {parts.netloc};",
        "        proxy_set_header Authorization $bff_authorization;",
        "        proxy_set_header Cookie $bff_upstream_cookie;",
        f"        proxy_set_header X-Forwarded-Prefix /api/{name};",
        "        proxy_set_header X-Forwarded-For $remote_addr;",
        "        proxy_set_header X-Forwarded-Proto https;",
        f"        proxy_set_header X-Forwarded-Host {public};",
        "        proxy_set_header X-Request-ID $request_id;",
        '        proxy_set_header X-BFF-Authz-Secret "";',
        "        # Response headers the upstream may not set for the SPA's origin (proxy_headers.py).",
        "        proxy_ignore_headers X-Accel-Redirect X-Accel-Expires X-Accel-Limit-Rate X-Accel-Buffering",
        "                             X-Accel-Charset Expires Cache-Control Set-Cookie Vary;",
        *[f"        proxy_hide_header {h};" for h in hidden],
        "        add_header Cache-Control $bff_api_cache_control always;",
        f"        add_header Location $bff_api_location_{_ident(name)} always;  # empty: none",
        "        add_header Content-Security-Policy $bff_api_csp always;",
        '        add_header X-Content-Type-Options "nosniff" always;',
        '        add_header Referrer-Policy "no-referrer" always;',
        '        add_header Strict-Transport-Security "max-age=31536000" always;',
        "        add_header X-Request-ID $request_id always;",
        f"        proxy_read_timeout {int(settings.api_timeout)}s;",
    ]
    if scheme == "https":
        lines += [
            "        proxy_ssl_server_name on;",
            f"        proxy_ssl_name {parts.hostname};",
            "        proxy_ssl_verify on;",
            "        proxy_ssl_trusted_certificate /etc/ssl/certs/ca-certificates.crt;",
        ]
    return [*lines, "    }"]


def _cache_control_map() -> list[str]:
    """An API answer is per user: never `public` (proxy_headers.private_cache_control's rule,
    simplified for nginx: `no-store` stays, anything else becomes `private, no-cache`, so the
    browser revalidates with the upstream's ETag instead of trusting a max-age)."""
    return [
        "",
        "map $upstream_http_cache_control $bff_api_cache_control {",
        '    ""           "no-store";',
        '    "~*no-store" "no-store";',
        '    default      "private, no-cache";',
        "}",
        "",
        "# HTML an upstream answers gets the BFF's strict policy (security.STRICT_HTML_CSP).",
        "map $upstream_http_content_type $bff_api_csp {",
        f'    "~*^text/html" "{STRICT_HTML_CSP}";',
        '    default "";',
        "}",
    ]


# The rest of a redirect's path under the base: no dot segment (`..`, `%2e`) that a browser would
# resolve out of `/api/<name>/`, no fragment.
REST = r"(?<bff_rest>(?![^#]*(?:\.\.|%2[eE]))[^#]*)"


def _location_map(name: str, upstream: Upstream) -> list[str]:
    """An upstream's redirect as the browser may follow it (proxy_headers.mapped_location): only
    under its own base, rewritten to `/api/<name>/`; any other `Location` is dropped."""
    parts = urlsplit(upstream.url)
    base_path = re.escape(parts.path.rstrip("/") + "/")
    absolute = re.escape(f"{parts.scheme}://{parts.netloc}") + base_path
    return [
        "",
        f"map $upstream_http_location $bff_api_location_{_ident(name)} {{",
        f'    "~^{absolute}{REST}$" "/api/{name}/$bff_rest";',
        f'    "~^{base_path}{REST}$" "/api/{name}/$bff_rest";',
        '    default "";',
        "}",
    ]


def _json_error(code: str, description: str) -> str:
    """The BFF's error body (security.error_response), written into the configuration."""
    return json.dumps({"error": code, "error_description": description}, separators=(",", ":"))


def _static_error(name: str, status: int, code: str, description: str) -> list[str]:
    return [
        f"    location {name} {{",
        "        default_type application/json;",
        '        add_header Cache-Control "no-store" always;',
        '        add_header X-Content-Type-Options "nosniff" always;',
        f"        return {status} '{_json_error(code, description)}';",
        "    }",
    ]


def _ident(name: str) -> str:
    return name.replace("-", "_")


def _title(header: str) -> str:
    return "-".join(part.capitalize() for part in header.split("-"))
