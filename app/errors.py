"""The one exception type for expected failures, kept free of Flask so every module can raise it."""


class BffError(Exception):
    """An expected failure: the HTTP status, a stable machine-readable code, a sentence for people."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.status = status
        self.code = code
        self.description = description
