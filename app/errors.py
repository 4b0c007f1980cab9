"""Expected failures, each rendered as a clear 4xx/5xx answer: `BffError` and the IdP-related kinds
derived from it. Free of Flask, so every module can raise them."""


class BffError(Exception):
    """An expected failure: the HTTP status, a stable machine-readable code, a sentence for people."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.status = status
        self.code = code
        self.description = description


class OidcError(BffError):
    """The IdP refused, or answered something that fails a check. `status` is ours to send."""

    def __init__(self, code: str, description: str, status: int = 400) -> None:
        super().__init__(status, code, description)


class IdpUnavailable(OidcError):
    def __init__(self, description: str) -> None:
        super().__init__("idp_unavailable", description, status=502)


class RefreshRefused(OidcError):
    """The IdP will not refresh this session's tokens any more: the session is over."""

    def __init__(self) -> None:
        super().__init__("session_expired", "The session has expired; please sign in again.", status=401)


class TokenRefused(OidcError):
    """The IdP refused a token for one API (a client-credentials grant, or a refresh for another
    resource or scope) while the session itself stays good: `idp_error` is its error code."""

    def __init__(self, idp_error: str) -> None:
        super().__init__("token_unavailable", "The identity provider refused a token for this API.", status=502)
        self.idp_error = idp_error
