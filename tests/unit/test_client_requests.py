"""What the BFF sends to the IdP's token, revocation and PAR endpoints, over real HTTP: the
client's authentication as configured (private_key_jwt's assertion included) and PAR's pushed
parameters, with the browser's URL holding only `client_id` and `request_uri` (DESIGN §10)."""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from app.client_auth import parse_client_keys
from app.errors import OidcError
from app.idp_documents import ProviderMetadata
from app.oidc import Provider

SEEN: list[dict] = []
REPLIES: dict[str, tuple[int, dict]] = {}
EC = ECKey.generate_key("P-256", parameters={"kid": "bff-2026"})
KEYS = parse_client_keys(json.dumps(EC.as_dict(private=True)))


class Endpoints(BaseHTTPRequestHandler):
    def do_POST(self):
        form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        SEEN.append({"path": self.path, "form": form, "authorization": self.headers.get("Authorization")})
        status, body = REPLIES.get(self.path, (200, {"access_token": "at", "expires_in": 60}))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def base():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoints)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def make_provider(base):
    SEEN.clear()
    REPLIES.clear()

    def make(methods=("client_secret_basic", "private_key_jwt"), advertise_par=True, **options) -> Provider:
        metadata = ProviderMetadata(
            issuer="https://idp.example/realms/x",
            authorization_endpoint="https://idp.example/auth?p=b2c_flow",
            token_endpoint=f"{base}/token",
            jwks_uri="j",
            revocation_endpoint=f"{base}/revoke",
            token_auth_methods=tuple(methods),
            par_endpoint=f"{base}/par" if advertise_par else None,
        )

        class LocalProvider(Provider):
            @property
            def metadata(self):
                return self._local

        provider = LocalProvider(
            issuer=metadata.issuer,
            client_id="bff",
            client_secret=options.pop("client_secret", ""),
            scopes="openid offline_access",
            redirect_uri="https://app.example/bff/callback",
            timeout=5,
            revocation_timeout=2,
            **options,
        )
        provider._local = metadata
        return provider

    return make


def assertion_claims(seen: dict) -> dict:
    form = seen["form"]
    assert form["client_assertion_type"] == ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"]
    decoded = jwt.decode(form["client_assertion"][0], KeySet([EC]), algorithms=["ES256"])
    assert decoded.header["kid"] == "bff-2026"
    return decoded.claims


def test_private_key_jwt_signs_every_token_revocation_and_par_request_for_the_token_endpoint(make_provider, base):
    provider = make_provider(client_keys=KEYS)
    REPLIES["/par"] = (201, {"request_uri": "urn:ietf:params:oauth:request_uri:abc", "expires_in": 60})
    REPLIES["/revoke"] = (200, {})
    provider.authorization_url(state="s", nonce="n", code_verifier="v" * 43)
    provider.refresh("rt-1")
    provider.client_credentials(resource="urn:jobs")
    assert provider.revoke_refresh_token("rt-2")
    assert [s["path"] for s in SEEN] == ["/par", "/token", "/token", "/revoke"]
    jtis = set()
    for seen in SEEN:
        assert seen["authorization"] is None and "client_secret" not in seen["form"]
        claims = assertion_claims(seen)
        assert claims["iss"] == claims["sub"] == "bff" and claims["aud"] == f"{base}/token"
        jtis.add(claims["jti"])
    assert len(jtis) == 4  # a fresh one each time


def test_the_assertion_audience_can_be_the_issuer(make_provider):
    provider = make_provider(client_keys=KEYS, assertion_audience="issuer", advertise_par=False)
    provider.refresh("rt-1")
    assert assertion_claims(SEEN[0])["aud"] == "https://idp.example/realms/x"


def test_par_pushes_the_parameters_and_the_browser_url_holds_only_client_id_and_request_uri(make_provider):
    provider = make_provider(client_secret="s3cret", methods=("client_secret_basic",))
    REPLIES["/par"] = (201, {"request_uri": "urn:ietf:params:oauth:request_uri:xyz", "expires_in": 60})
    url = provider.authorization_url(state="st", nonce="no", code_verifier="v" * 43, prompt="consent")
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://idp.example/auth"
    query = parse_qs(parts.query)
    assert query == {"p": ["b2c_flow"], "client_id": ["bff"], "request_uri": ["urn:ietf:params:oauth:request_uri:xyz"]}
    (pushed,) = SEEN
    form = pushed["form"]
    assert form["state"] == ["st"] and form["nonce"] == ["no"] and form["prompt"] == ["consent"]
    assert form["code_challenge_method"] == ["S256"] and form["response_type"] == ["code"]
    assert form["redirect_uri"] == ["https://app.example/bff/callback"] and "p" not in form
    assert base64.b64decode(pushed["authorization"].split()[1]) == b"bff:s3cret"


@pytest.mark.parametrize(("status", "body"), [(400, {"error": "invalid_request"}), (401, {})])
def test_a_refused_par_request_is_a_clear_error(make_provider, status, body):
    provider = make_provider(client_secret="s", methods=("client_secret_basic",))
    REPLIES["/par"] = (status, body)
    with pytest.raises(OidcError) as raised:
        provider.authorization_url(state="s", nonce="n", code_verifier="v" * 43)
    assert raised.value.code == "par_refused" and raised.value.status == 502


def test_par_never_sends_the_parameters_in_the_url(make_provider):
    provider = make_provider(client_secret="s", methods=("client_secret_basic",), par="never")
    query = parse_qs(urlsplit(provider.authorization_url(state="s", nonce="n", code_verifier="v" * 43)).query)
    assert query["state"] == ["s"] and "request_uri" not in query and SEEN == []


@pytest.mark.parametrize(
    ("options", "metadata_change", "named"),
    [
        ({"par": "always"}, {"par_endpoint": None}, "BFF_OIDC_PAR: always"),
        ({"par": "never"}, {"par_required": True}, "BFF_OIDC_PAR: never"),
        ({"client_keys": KEYS}, {"token_auth_methods": ("client_secret_basic",)}, "BFF_OIDC_CLIENT_KEY: "),
        ({"client_keys": KEYS}, {"token_auth_signing_algorithms": ("RS256",)}, "BFF_OIDC_CLIENT_KEY: "),
    ],
)
def test_a_configuration_the_idp_cannot_accept_names_its_variable_and_sends_nothing(
    make_provider, options, metadata_change, named
):
    provider = make_provider(client_secret="s", **options)
    provider._local = replace(provider._local, **metadata_change)
    for attempt in (
        lambda: provider.authorization_url(state="s", nonce="n", code_verifier="v" * 43),
        lambda: provider.refresh("rt"),
    ):
        with pytest.raises(OidcError) as raised:
            attempt()
        assert raised.value.code == "client_misconfigured" and raised.value.description.startswith(named)
    assert SEEN == []


def test_the_sign_in_asks_for_every_resource_and_its_token_for_its_own(make_provider):
    provider = make_provider(client_secret="s", advertise_par=False, resources=("urn:echo", "urn:reports"))
    query = parse_qs(urlsplit(provider.authorization_url(state="s", nonce="n", code_verifier="v" * 43)).query)
    assert query["resource"] == ["urn:echo", "urn:reports"]
    provider.refresh("rt-1")
    provider.refresh("rt-2", resource="urn:reports")
    provider.refresh("rt-3", scope="reports")
    assert [s["form"].get("resource") for s in SEEN] == [["urn:echo"], ["urn:reports"], None]


def test_of_two_keys_the_first_signs(make_provider):
    other = ECKey.generate_key("P-256", parameters={"kid": "bff-2025"})
    keys = parse_client_keys(json.dumps({"keys": [EC.as_dict(private=True), other.as_dict(private=True)]}))
    make_provider(client_keys=keys, advertise_par=False).refresh("rt-1")
    assert assertion_claims(SEEN[0])["iss"] == "bff"  # verified with the first key, whose kid it names
