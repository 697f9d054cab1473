"""Consumers and their credentials: who may call, looked up fast and compared safely.

Consumers come from `[consumers.NAME]` tables (ConsumerConfig) and from the admin API, which
adds and removes consumers and credentials at runtime through ConsumerRegistry's methods.

Lookups, per credential kind:
- API keys are indexed by their SHA-256 digest, whether configured in plain or as
  ``sha256:<hex>``; a presented key is hashed and found with one dict lookup, so a plain key
  is never compared byte by byte with what an attacker sent (no timing signal).
- Basic-auth users hold bcrypt or argon2 hashes. Checking one costs tens of milliseconds by
  design, so successful checks are remembered briefly in a bounded cache keyed by a keyed
  hash (BLAKE2b with a per-process random key) of the presented username and password.
- JWT subjects map a token's consumer claim to a consumer.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import argon2
import bcrypt
import msgspec
from msgspec import Meta

from .plugins import Consumer, Request

__all__ = [
    "IDENTITY_HEADER_PREFIXES",
    "BasicCredential",
    "Consumer",
    "ConsumerConfig",
    "ConsumerError",
    "ConsumerRegistry",
    "api_key_digest",
    "consumer_config_problems",
    "forward_identity",
    "hashed_api_key",
    "password_hash_problem",
    "strip_identity_headers",
]

_SHA256_PREFIX = "sha256:"
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_ARGON2_PREFIXES = ("$argon2id$", "$argon2i$", "$argon2d$")
# The consumer names every store accepts (config_rules checks the same): they travel in
# X-Consumer-Id and admin API URLs.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

#: Headers the auth plugins own; whatever the client sent under these prefixes is dropped.
IDENTITY_HEADER_PREFIXES = ("x-consumer-", "x-credential-")
_STRIPPED_FLAG = "consumers.identity_headers_stripped"


class BasicCredential(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One basic-auth user of a consumer."""

    username: Annotated[str, Meta(description="The user name sent in the Authorization: Basic header.")]
    password: Annotated[
        str,
        Meta(
            description=(
                'A bcrypt ("$2b$12$...") or argon2 ("$argon2id$...") hash of the password; '
                "plain passwords are refused."
            )
        ),
    ]


class ConsumerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One [consumers.NAME] table."""

    keys: Annotated[
        list[str],
        Meta(description='API keys, each as given or as "sha256:<64 hex digits>" (the SHA-256 of the key).'),
    ] = []
    basic_auth: Annotated[
        list[BasicCredential],
        Meta(description="Basic-auth users: tables of username and password hash."),
    ] = []
    jwt_subjects: Annotated[
        list[str],
        Meta(description="Values of the jwt plugin's consumer claim (default `sub`) naming this consumer."),
    ] = []
    groups: Annotated[
        list[str],
        Meta(description="Groups the consumer belongs to (acl allow/deny; forwarded as X-Consumer-Groups)."),
    ] = []
    metadata: Annotated[
        dict[str, str],
        Meta(description="Free-form string metadata, visible to plugins as consumer.metadata."),
    ] = {}


class ConsumerError(ValueError):
    """Consumers or credentials that cannot be used; `errors` are (key path, message) pairs."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{path}: {message}" if path else message for path, message in errors))
        self.errors = errors


# --- credential helpers ------------------------------------------------------------------------


def _key_bytes(key: bytes | str) -> bytes:
    # The engine decodes header bytes as latin-1, so latin-1 gives back the bytes that were
    # on the wire; text that latin-1 cannot hold came from elsewhere (config, admin API) as UTF-8.
    if isinstance(key, bytes):
        return key
    try:
        return key.encode("latin-1")
    except UnicodeEncodeError:
        return key.encode("utf-8")


def api_key_digest(key: bytes | str) -> bytes:
    """The SHA-256 digest a presented key is looked up by."""
    return hashlib.sha256(_key_bytes(key)).digest()


def _configured_key_digest(key: str) -> bytes:
    if key.startswith(_SHA256_PREFIX):
        return bytes.fromhex(key[len(_SHA256_PREFIX) :])
    # Keys in the config file are text: the client sends their UTF-8 bytes.
    return hashlib.sha256(key.encode("utf-8")).digest()


def hashed_api_key(key: str) -> str:
    """The "sha256:<hex>" form of a plain key (what the admin API should store)."""
    return _SHA256_PREFIX + _configured_key_digest(key).hex()


def api_key_problem(key: str) -> str | None:
    if key.startswith(_SHA256_PREFIX):
        if not _SHA256_HEX.fullmatch(key[len(_SHA256_PREFIX) :]):
            return 'a "sha256:" key must be followed by 64 hex digits'
        return None
    if not key:
        return "an API key must not be empty"
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in key):
        return "an API key must not contain spaces or control characters"
    return None


def password_hash_problem(password_hash: str) -> str | None:
    """Why `password_hash` is not a bcrypt or argon2 hash we can verify, or None."""
    if password_hash.startswith("$2"):
        if not _BCRYPT_HASH.fullmatch(password_hash):
            return "malformed bcrypt hash"
        return None
    if password_hash.startswith(_ARGON2_PREFIXES):
        try:
            argon2.extract_parameters(password_hash)
        except argon2.exceptions.InvalidHashError:
            return "malformed argon2 hash"
        return None
    return 'expected a bcrypt ("$2b$...") or argon2 ("$argon2id$...") hash, not a plain password'


_argon2_hasher = argon2.PasswordHasher()


def verify_password(password: bytes, password_hash: str) -> bool:
    """Check a password against a bcrypt or argon2 hash (slow on purpose: tens of milliseconds)."""
    if password_hash.startswith("$2"):
        try:
            return bcrypt.checkpw(password, password_hash.encode("ascii"))
        except ValueError:
            return False  # bcrypt >= 5 refuses passwords over 72 bytes instead of truncating
    try:
        return _argon2_hasher.verify(password_hash, password)
    except argon2.exceptions.VerificationError:
        return False
    except argon2.exceptions.InvalidHashError:
        return False


def consumer_config_problems(config: ConsumerConfig) -> list[tuple[str, str]]:
    """Problems within one consumer table, as (key path relative to it, message)."""
    problems: list[tuple[str, str]] = []
    for index, key in enumerate(config.keys):
        problem = api_key_problem(key)
        if problem:
            problems.append((f"keys[{index}]", problem))
    for index, credential in enumerate(config.basic_auth):
        if not credential.username or ":" in credential.username:
            problems.append((f"basic_auth[{index}].username", "must be non-empty and contain no ':'"))
        problem = password_hash_problem(credential.password)
        if problem:
            problems.append((f"basic_auth[{index}].password", problem))
    for index, subject in enumerate(config.jwt_subjects):
        if not subject:
            problems.append((f"jwt_subjects[{index}]", "must not be empty"))
    for index, group in enumerate(config.groups):
        # Groups travel comma-separated in X-Consumer-Groups.
        if not group or any(c in group for c in ", \t\r\n\0"):
            problems.append((f"groups[{index}]", "must be non-empty without commas or whitespace"))
        elif any(not 0x21 <= ord(c) <= 0x7E for c in group):
            problems.append((f"groups[{index}]", "must be printable ASCII"))
    for name, value in config.metadata.items():
        if any(c in value for c in "\r\n\0"):
            problems.append((f"metadata.{name}", "must not contain CR, LF or NUL"))
    return problems


# --- identity headers ------------------------------------------------------------------------


def strip_identity_headers(request: Request) -> None:
    """Drop client-sent X-Consumer-* / X-Credential-* headers (once per request)."""
    if request.ctx.get(_STRIPPED_FLAG):
        return  # an earlier auth plugin stripped them, and may have set its own since
    request.ctx[_STRIPPED_FLAG] = True
    for name in {
        key.lower() for key, _ in request.headers if key.lower().startswith(IDENTITY_HEADER_PREFIXES)
    }:
        request.headers.remove(name)


def forward_identity(request: Request, consumer: Consumer, credential_id: str | None = None) -> None:
    """Authenticate the request and tell the upstream who is calling."""
    request.authenticate(consumer)
    request.headers.set("X-Consumer-Id", consumer.name)
    if consumer.groups:
        request.headers.set("X-Consumer-Groups", ",".join(consumer.groups))
    else:
        request.headers.remove("X-Consumer-Groups")
    if credential_id is not None and not any(c in credential_id for c in "\r\n\0"):
        request.headers.set("X-Credential-Identifier", credential_id)
    else:
        request.headers.remove("X-Credential-Identifier")


# --- the registry --------------------------------------------------------------------------------


@dataclass
class _Entry:
    """A consumer and the credentials it holds, as the registry keeps them."""

    consumer: Consumer
    keys: list[str] = field(default_factory=list)
    basic_auth: dict[str, str] = field(default_factory=dict)  # username -> hash
    jwt_subjects: list[str] = field(default_factory=list)


class _VerifiedCache:
    """Recently verified basic-auth credentials: keyed digest -> (consumer name, expiry)."""

    def __init__(self, max_entries: int, ttl: float, clock: Callable[[], float]) -> None:
        self._entries: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._max_entries = max_entries
        self._ttl = ttl
        self._clock = clock
        self._hash_key = os.urandom(32)  # so the cache never holds a plain hash of a password

    def key(self, username: str, password: bytes) -> bytes:
        digest = hashlib.blake2b(key=self._hash_key, digest_size=32)
        digest.update(username.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
        digest.update(password)
        return digest.digest()

    def get(self, key: bytes) -> str | None:
        hit = self._entries.get(key)
        if hit is None:
            return None
        name, expires = hit
        if self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return name

    def put(self, key: bytes, name: str) -> None:
        self._entries[key] = (name, self._clock() + self._ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class ConsumerRegistry:
    """Every consumer of one gateway config, indexed by each kind of credential."""

    def __init__(
        self,
        *,
        basic_cache_size: int = 10_000,
        basic_cache_ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries: dict[str, _Entry] = {}
        self._by_key_digest: dict[bytes, Consumer] = {}
        self._by_username: dict[str, tuple[str, Consumer]] = {}
        self._by_subject: dict[str, Consumer] = {}
        self._verified = _VerifiedCache(basic_cache_size, basic_cache_ttl, clock)
        #: Bumped by every change, so a cache built on lookups (the engine's key memo) can tell
        #: that a key or a consumer it remembers may have gone.
        self.generation = 0

    @classmethod
    def from_config(cls, tables: Mapping[str, ConsumerConfig | Mapping[str, Any]]) -> ConsumerRegistry:
        """Build from the decoded [consumers] tables; ConsumerError lists every problem."""
        registry = cls()
        errors: list[tuple[str, str]] = []
        for name, table in tables.items():
            try:
                registry.add(name, table)
            except ConsumerError as exc:
                errors.extend(
                    (f"consumers.{name}.{path}" if path else f"consumers.{name}", message)
                    for path, message in exc.errors
                )
        if errors:
            raise ConsumerError(errors)
        return registry

    # --- reading ---

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Consumer]:
        return iter([entry.consumer for entry in self._entries.values()])

    def get(self, name: str) -> Consumer | None:
        entry = self._entries.get(name)
        return entry.consumer if entry else None

    def config(self, name: str) -> ConsumerConfig | None:
        """A consumer's current table (keys as stored: plain or sha256)."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        return ConsumerConfig(
            keys=list(entry.keys),
            basic_auth=[BasicCredential(username=u, password=h) for u, h in entry.basic_auth.items()],
            jwt_subjects=list(entry.jwt_subjects),
            groups=list(entry.consumer.groups),
            metadata=dict(entry.consumer.metadata),
        )

    def by_api_key(self, key: bytes | str) -> Consumer | None:
        """The consumer holding this API key: one dict lookup on the key's SHA-256 digest."""
        return self._by_key_digest.get(hashlib.sha256(_key_bytes(key)).digest())

    def by_jwt_subject(self, subject: str) -> Consumer | None:
        return self._by_subject.get(subject)

    def by_basic_auth_cached(self, username: str, password: bytes) -> Consumer | None:
        """The consumer if these credentials were verified recently (no hashing cost)."""
        name = self._verified.get(self._verified.key(username, password))
        if name is None:
            return None
        entry = self._by_username.get(username)
        return entry[1] if entry is not None and entry[1].name == name else None

    def by_basic_auth(self, username: str, password: bytes) -> Consumer | None:
        """Verify against the stored hash (blocking, slow by design); remembers successes."""
        cache_key = self._verified.key(username, password)
        name = self._verified.get(cache_key)
        entry = self._by_username.get(username)
        if entry is None:
            return None
        password_hash, consumer = entry
        if name == consumer.name:
            return consumer
        if not verify_password(password, password_hash):
            return None
        # The credential may have been replaced while we were hashing in a thread.
        if self._by_username.get(username) is not entry:
            return None
        self._verified.put(cache_key, consumer.name)
        return consumer

    async def by_basic_auth_async(self, username: str, password: bytes) -> Consumer | None:
        """by_basic_auth off the event loop (bcrypt and argon2 release the GIL while hashing)."""
        cached = self.by_basic_auth_cached(username, password)
        if cached is not None:
            return cached
        return await asyncio.get_running_loop().run_in_executor(None, self.by_basic_auth, username, password)

    # --- changing (config load and admin API) ---

    def add(self, name: str, table: ConsumerConfig | Mapping[str, Any], *, replace: bool = False) -> Consumer:
        """Add a consumer with its credentials; all-or-nothing (ConsumerError leaves no trace)."""
        config = _as_config(table)
        problems = [] if _NAME.fullmatch(name) else [("", f"invalid consumer name {name!r}")]
        problems += consumer_config_problems(config)
        if name in self._entries and not replace:
            problems.append(("", f"consumer {name!r} already exists"))
        old = self._entries.get(name) if replace else None
        problems += self._clashes(name, config)
        if problems:
            raise ConsumerError(problems)
        if old is not None:
            self.remove(name)
        consumer = Consumer(
            name=name, groups=tuple(dict.fromkeys(config.groups)), metadata=dict(config.metadata)
        )
        entry = _Entry(consumer)
        self._entries[name] = entry
        self.generation += 1
        for key in config.keys:
            self._index_key(entry, key)
        for credential in config.basic_auth:
            self._index_basic(entry, credential.username, credential.password)
        for subject in config.jwt_subjects:
            self._index_subject(entry, subject)
        return consumer

    def remove(self, name: str) -> bool:
        entry = self._entries.pop(name, None)
        if entry is None:
            return False
        self.generation += 1
        for key in entry.keys:
            self._by_key_digest.pop(_configured_key_digest(key), None)
        for username in entry.basic_auth:
            self._by_username.pop(username, None)
        for subject in entry.jwt_subjects:
            self._by_subject.pop(subject, None)
        self._verified.clear()
        return True

    def update(
        self, name: str, *, groups: list[str] | None = None, metadata: dict[str, str] | None = None
    ) -> Consumer:
        """Change a consumer's groups and/or metadata, keeping its credentials."""
        current = self.config(name)
        if current is None:
            raise ConsumerError([("", f"no consumer {name!r}")])
        changed = msgspec.structs.replace(
            current,
            groups=current.groups if groups is None else list(groups),
            metadata=current.metadata if metadata is None else dict(metadata),
        )
        return self.add(name, changed, replace=True)

    def add_key(self, name: str, key: str) -> None:
        entry = self._entry(name)
        problem = api_key_problem(key)
        if problem:
            raise ConsumerError([("key", problem)])
        if _configured_key_digest(key) in self._by_key_digest:
            raise ConsumerError([("key", "this API key is already in use")])
        self._index_key(entry, key)

    def remove_key(self, name: str, key: str) -> bool:
        """Remove a key given as stored or in either form (plain or its sha256)."""
        entry = self._entry(name)
        digest = _configured_key_digest(key) if api_key_problem(key) is None else None
        for stored in entry.keys:
            if digest is not None and _configured_key_digest(stored) == digest:
                entry.keys.remove(stored)
                del self._by_key_digest[digest]
                self.generation += 1
                return True
        return False

    def add_basic_credential(self, name: str, username: str, password_hash: str) -> None:
        entry = self._entry(name)
        problems = consumer_config_problems(
            ConsumerConfig(basic_auth=[BasicCredential(username=username, password=password_hash)])
        )
        if username in self._by_username:
            problems.append(("username", f"user {username!r} already exists"))
        if problems:
            raise ConsumerError(problems)
        self._index_basic(entry, username, password_hash)

    def remove_basic_credential(self, name: str, username: str) -> bool:
        entry = self._entry(name)
        if entry.basic_auth.pop(username, None) is None:
            return False
        del self._by_username[username]
        self.generation += 1
        self._verified.clear()
        return True

    def add_jwt_subject(self, name: str, subject: str) -> None:
        entry = self._entry(name)
        if not subject:
            raise ConsumerError([("subject", "must not be empty")])
        if subject in self._by_subject:
            raise ConsumerError([("subject", f"subject {subject!r} already belongs to a consumer")])
        self._index_subject(entry, subject)

    def remove_jwt_subject(self, name: str, subject: str) -> bool:
        entry = self._entry(name)
        if subject not in entry.jwt_subjects:
            return False
        entry.jwt_subjects.remove(subject)
        del self._by_subject[subject]
        self.generation += 1
        return True

    # --- internals ---

    def _entry(self, name: str) -> _Entry:
        entry = self._entries.get(name)
        if entry is None:
            raise ConsumerError([("", f"no consumer {name!r}")])
        return entry

    def _clashes(self, name: str, config: ConsumerConfig) -> list[tuple[str, str]]:
        """Credentials of `config` that another consumer (or the table itself) already holds."""
        problems: list[tuple[str, str]] = []
        digests: set[bytes] = set()
        for index, key in enumerate(config.keys):
            if api_key_problem(key):
                continue
            digest = _configured_key_digest(key)
            holder = self._by_key_digest.get(digest)
            if digest in digests or (holder is not None and holder.name != name):
                problems.append((f"keys[{index}]", "this API key is already in use"))
            digests.add(digest)
        usernames: set[str] = set()
        for index, credential in enumerate(config.basic_auth):
            taken = self._by_username.get(credential.username)
            if credential.username in usernames or (taken is not None and taken[1].name != name):
                problems.append(
                    (f"basic_auth[{index}].username", f"user {credential.username!r} already exists")
                )
            usernames.add(credential.username)
        subjects: set[str] = set()
        for index, subject in enumerate(config.jwt_subjects):
            owner = self._by_subject.get(subject)
            if subject in subjects or (owner is not None and owner.name != name):
                problems.append(
                    (f"jwt_subjects[{index}]", f"subject {subject!r} already belongs to a consumer")
                )
            subjects.add(subject)
        return problems

    def _index_key(self, entry: _Entry, key: str) -> None:
        self.generation += 1
        entry.keys.append(key)
        self._by_key_digest[_configured_key_digest(key)] = entry.consumer

    def _index_basic(self, entry: _Entry, username: str, password_hash: str) -> None:
        self.generation += 1
        entry.basic_auth[username] = password_hash
        self._by_username[username] = (password_hash, entry.consumer)

    def _index_subject(self, entry: _Entry, subject: str) -> None:
        self.generation += 1
        entry.jwt_subjects.append(subject)
        self._by_subject[subject] = entry.consumer


def _as_config(table: ConsumerConfig | Mapping[str, Any]) -> ConsumerConfig:
    if isinstance(table, ConsumerConfig):
        return table
    try:
        return msgspec.convert(dict(table), ConsumerConfig)
    except msgspec.ValidationError as exc:
        text = str(exc)
        message, _, where = text.rpartition(" - at `")
        if not message:
            return _raise(("", text))
        return _raise((where.rstrip("`").removeprefix("$").removeprefix("."), message))


def _raise(problem: tuple[str, str]) -> ConsumerConfig:
    raise ConsumerError([problem])
