"""Request bodies of the admin API, decoded once at the edge into Structs.

Decoding errors become AdminError(400) messages that name the offending field, e.g.
``invalid request body: expected `str`, got `int` at `groups[0]```.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

from .errors import AdminError

__all__ = [
    "BasicAuthBody",
    "CachePurgeBody",
    "ConsumerBody",
    "ConsumerPatchBody",
    "DecisionBody",
    "JwtSubjectBody",
    "KeyBody",
    "SubscriptionBody",
    "decode_body",
]

B = TypeVar("B", bound=msgspec.Struct)


class ConsumerBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    groups: list[str] = []
    metadata: dict[str, str] = {}


class ConsumerPatchBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    groups: list[str] | None = None
    metadata: dict[str, str] | None = None


class KeyBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    key: str | None = None  # the key in clear; generated when neither is given
    key_sha256: str | None = None  # or only its digest ("sha256:<hex>" or bare hex): never shown again


class BasicAuthBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    username: str
    password: str | None = None  # in clear: hashed with bcrypt here
    password_hash: str | None = None  # or already a bcrypt / argon2 hash


class JwtSubjectBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    subject: str


class SubscriptionBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    consumer: str
    product: str
    requested_by: str = "admin"
    reason: str | None = None


class DecisionBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    by: str = "admin"
    reason: str | None = None


class CachePurgeBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    key: str | None = None
    prefix: str | None = None


def decode_body(body: bytes, body_type: type[B], *, optional: bool = False) -> B:
    """Decode a JSON object body; an empty body is `{}` when `optional`, else a 400."""
    if not body.strip():
        if optional:
            body = b"{}"
        else:
            fields = ", ".join(f"`{name}`" for name in body_type.__struct_fields__)
            raise AdminError(
                400, "invalid_request", f"request body is empty; expected a JSON object ({fields})"
            )
    try:
        return msgspec.json.decode(body, type=body_type)
    except msgspec.ValidationError as exc:
        raise AdminError(400, "invalid_request", f"invalid request body: {_describe(exc)}") from None
    except msgspec.DecodeError as exc:
        raise AdminError(400, "invalid_request", f"request body is not valid JSON: {exc}") from None


def _describe(exc: msgspec.ValidationError) -> str:
    # "Expected `str`, got `int` - at `$.groups[0]`" -> "expected `str`, got `int` at `groups[0]`"
    text = str(exc)
    message, separator, where = text.rpartition(" - at `$")
    if not separator:
        message, where = text, ""
    message = message[:1].lower() + message[1:]
    message = message.replace("object missing required field", "missing required field")
    message = message.replace("object contains unknown field", "unknown field")
    where = where.rstrip("`").removeprefix(".")
    return f"{message} at `{where}`" if where else message
