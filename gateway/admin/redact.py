"""Secrets out of a config before the admin API shows it.

Redacted: consumers' API keys and basic-auth password hashes, any value under a key that names
a secret (token, password, secret, ...), every value of a map that holds secrets by design
([admin] aws_keys: key id -> secret; a function's env), and the password in any URL's userinfo
(``redis://:hunter2@host`` -> ``redis://:<redacted>@host``).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["REDACTED", "redact_config"]

REDACTED = "<redacted>"

_SECRET_NAMES = frozenset(
    {"token", "password", "password_hash", "secret", "api_key", "keys", "client_secret", "private_key"}
)
_SECRET_SUFFIXES = ("_token", "_secret", "_password", "_api_key")
# Maps whose values are secrets whatever their keys are called (the keys themselves are shown).
_SECRET_MAPS = frozenset({"aws_keys", "env"})
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<password>[^@/\s]+)(?=@)")


def redact_config(value: Any) -> Any:
    """A copy of a JSON-like config (dicts, lists, scalars) with the secrets replaced."""
    return _redact(value, None)


def _is_secret_name(name: str | None) -> bool:
    if name is None:
        return False
    lower = name.lower().replace("-", "_")
    return lower in _SECRET_NAMES or lower.endswith(_SECRET_SUFFIXES)


def _redact(value: Any, name: str | None) -> Any:
    if isinstance(value, dict):
        if name in _SECRET_MAPS:
            return {key: REDACTED if item not in (None, "") else item for key, item in value.items()}
        return {key: _redact(item, str(key)) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(item, name) for item in value]
    if isinstance(value, str):
        if _is_secret_name(name) and value:
            return REDACTED
        return _URL_PASSWORD.sub(lambda match: match.group("head") + REDACTED, value)
    if _is_secret_name(name) and value is not None:
        return REDACTED
    return value
