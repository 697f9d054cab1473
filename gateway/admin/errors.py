"""The admin API's one error type: raised by handlers, answered in the gateway's error shape."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.plugins import Response

__all__ = ["AdminError"]


class AdminError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = list(headers)

    def response(self) -> Response:
        return Response.error(self.status, self.code, self.message, self.headers)
