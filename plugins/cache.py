"""cache: a shared response cache (RFC 9111) with request coalescing and an optional Redis tier.

    [routes.plugins.cache]
    ttl = "60s"              # freshness when the response gives none; explicit max-age/s-maxage wins

Each route's plugin instance owns one in-memory store (gateway._fastpath.cache: LRU, per-entry
TTL, byte budget `memory`). What may be stored and for how long follows gateway.cache_policy.
Responses carry `X-Cache: HIT` (served from the store, with `Age`), `MISS` (looked up, not found,
the response is being stored) or `BYPASS` (the request or the response is not cacheable).

Compiled path: when every access plugin before it on the route compiles too (and redis = false),
`fast_check()` hands the engine a CacheCheck (gateway._fastpath.checks) reading this same store:
a fresh hit is written from C without entering Python, and a miss goes upstream carrying an
EngineMiss, which decides storability when the response head arrives (one Python call per
miss); the engine tees the relayed, de-chunked body into the Fill and commits it at the end.
Concurrent misses wait for the first one's fetch in the engine (no Python task). A hit is
answered before the route's Python plugins: their response and log phases do not see it, and it
carries the head the first client saw (stored after those phases ran on the miss).

Python phases (the reference behaviour, used when the route's plugins keep the check from compiling):
- access: a fresh entry answers the request (HIT). Otherwise, with redis = true, the shared
  tier is asked. Concurrent misses for one resource are coalesced: the first goes upstream, the
  others wait (at most `lock_timeout`) and are answered from what it stores, or go upstream
  themselves when it stores nothing. `Cache-Control: only-if-cached` on a miss is a 504.
- response: decides storability from the response head and, when storable, puts a Fill (the
  store's incremental writer) into request.ctx[BODY_SINK_KEY]. Plugins never see bodies: the
  engine feeds the relayed body to that Fill (append per chunk, commit at the end, abort on
  failure). Without that engine hook nothing is stored and waiters go upstream.
- log: aborts a Fill nobody committed and wakes waiters, so a failed relay never strands them.

HEAD requests are answered from stored GET responses; HEAD responses are not stored (they have
no body to store). Response-phase plugins with a higher priority have already run when the head
is captured, so the stored headers are the ones the first client saw.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Annotated, Any

import msgspec

from gateway.cache_policy import DEFAULT_STATUSES, RequestRule, decide_response, request_rule
from gateway.plugins import Plugin, Request, Response, ResponseHead
from gateway.units import parse_duration, parse_size

__all__ = ["BODY_SINK_KEY", "PLUGIN", "CacheConfig", "EngineMiss", "ResponseCachePlugin"]

# Imported by name: mypy cannot follow the editable install's folder mapping to _fastpath/.
_cache: Any = importlib.import_module("gateway._fastpath.cache")

#: request.ctx key of the Fill the engine feeds the relayed response body into.
BODY_SINK_KEY = "body_sink"
_STATE = "cache"

logger = logging.getLogger("lambdagate.cache")


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class CacheConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    ttl: Annotated[
        str | float,
        _doc(
            'Freshness lifetime ("60s", "5m") of responses that give none (no s-maxage, max-age or '
            "Expires); an explicit lifetime from the response always wins."
        ),
    ] = "60s"
    methods: Annotated[
        tuple[str, ...],
        _doc("Request methods answered from the cache: GET and/or HEAD (HEAD is served from GET entries)."),
    ] = ("GET", "HEAD")
    statuses: Annotated[
        tuple[int, ...],
        _doc("Response status codes that may be stored (default: RFC 9110's cacheable ones, without 206)."),
    ] = DEFAULT_STATUSES
    max_entry_size: Annotated[
        str | int, _doc('Largest response (head + body) stored, as a size ("1MiB") or bytes.')
    ] = "1MiB"
    memory: Annotated[
        str | int,
        _doc('Byte budget of this route\'s store per worker ("64MiB"); least recently used go first.'),
    ] = "64MiB"
    vary_headers: Annotated[
        tuple[str, ...],
        _doc("Request headers always part of the cache key, besides the ones the response's Vary lists."),
    ] = ()
    bypass_header: Annotated[
        str | None, _doc("A request carrying this header (any value) neither reads nor fills the cache.")
    ] = None
    lock_timeout: Annotated[
        str | float,
        _doc(
            "How long a coalesced miss waits for the request fetching the same resource, then goes upstream."
        ),
    ] = "5s"
    redis: Annotated[
        bool, _doc("Share entries through the Redis tier when [store] redis is set (a second level).")
    ] = False

    def __post_init__(self) -> None:
        for name in ("ttl", "lock_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float):
                try:
                    parse_duration(value)
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None
            elif value < 0:
                raise ValueError(f"{name}: must not be negative")
        for name in ("max_entry_size", "memory"):
            try:
                parse_size(getattr(self, name))
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        bad = [method for method in self.methods if method not in ("GET", "HEAD")]
        if bad or not self.methods:
            raise ValueError(f"methods: only GET and HEAD can be cached, got {list(self.methods)}")
        for status in self.statuses:
            if not 200 <= status <= 599 or status == 206:
                raise ValueError(f"statuses: {status} cannot be cached (200-599, not 206)")

    def seconds(self, name: str) -> float:
        value = getattr(self, name)
        return float(value) if isinstance(value, int | float) else parse_duration(value)


def normalize_host(value: str | None) -> bytes:
    """The Host value as the key uses it: lowercased, without the port."""
    if not value:
        return b""
    host = value.strip().lower()
    if host.startswith("["):
        host = host[: host.find("]") + 1] if "]" in host else host
    elif ":" in host:
        host = host.rsplit(":", 1)[0]
    return host.encode("latin-1", "replace")


def _header_getter(request: Request) -> Callable[[bytes], bytes | None]:
    """Vary values of a request: repeated fields combined with ", " (RFC 9110 §5.3)."""

    def get(name: bytes) -> bytes | None:
        values = request.headers.get_all(name.decode("latin-1"))
        if not values:
            return None
        return ", ".join(values).encode("latin-1", "replace")

    return get


@dataclass
class _CacheState:
    """Per-request cache bookkeeping in request.ctx."""

    verdict: str  # HIT | MISS | BYPASS
    rule: RequestRule | None = None
    primary: bytes = b""
    key: object = None
    leader: bool = False
    request_time: float = 0.0
    reason: str = ""


class ResponseCachePlugin(Plugin):
    name = "cache"
    version = "1.0.0"
    priority = 100  # after authentication, ACLs and limits (Kong's proxy-cache: 100)
    Config = CacheConfig

    def __init__(
        self, config: CacheConfig, *, redis_url: str | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(config)
        self.config: CacheConfig = config
        self.clock = clock
        self.default_ttl = config.seconds("ttl")
        self.lock_timeout = config.seconds("lock_timeout")
        self.statuses = frozenset(config.statuses)
        self.methods = frozenset(config.methods)
        self.extra_vary = tuple(sorted({name.lower().encode("latin-1") for name in config.vary_headers}))
        #: The route's store; the engine's compiled hit path reads this same object.
        self.store = _cache.ResponseCache(parse_size(config.memory), parse_size(config.max_entry_size))
        self.tier: Any = None
        self._writes: set[asyncio.Task[None]] = set()
        if config.redis and redis_url is not None:
            from gateway.store.redis_cache import RedisCacheTier

            self.tier = RedisCacheTier.from_url(redis_url)
            self.store.on_store = self._write_through

    # --- keys --------------------------------------------------------------------------------

    def primary_for(self, request: Request) -> bytes:
        """Key material of a request; HEAD shares GET's entries; each consumer has its own."""
        material: bytes = _cache.primary_material(
            b"GET",
            normalize_host(request.headers.get("host")),
            request.path.encode("latin-1", "replace"),
            request.query.encode("latin-1", "replace"),
        )
        if request.consumer is not None:
            # Authenticated callers never share entries (as Kong keys its cache by consumer).
            material += b"\x00c:" + request.consumer.name.encode("utf-8")
        return material

    def _vary_for(self, names: tuple[str, ...]) -> tuple[bytes, ...]:
        listed = {name.encode("latin-1") for name in names}
        return tuple(sorted(listed.union(self.extra_vary)))

    # --- compiled fast path (gateway.route_plugins asks for it) ---------------------------------

    def fast_check(self) -> Any:
        """The compiled equivalent of the access phase, sharing this plugin's store.

        None with the Redis tier: a local miss then has to ask Redis, which the Python path does.
        """
        if self.tier is not None:
            return None
        from gateway._fastpath.checks import CacheCheck

        return CacheCheck(
            self.store,
            get="GET" in self.methods,
            head="HEAD" in self.methods,
            bypass_header=self.config.bypass_header,
            request_rule=self._engine_rule,
            new_miss=self._engine_miss,
            lock_timeout=self.lock_timeout,
        )

    def _engine_rule(self, method: str, headers: list[tuple[str, str]]) -> RequestRule:
        return request_rule(method, headers, self.methods)

    def _engine_miss(
        self, primary: bytes, key: int, fields: list[tuple[bytes, bytes]], request_time: float, leader: bool
    ) -> EngineMiss:
        return EngineMiss(self, primary, key, fields, request_time, leader)

    # --- access ------------------------------------------------------------------------------

    def access(self, request: Request) -> Response | Awaitable[Response | None] | None:
        now = self.clock()
        if (
            self.config.bypass_header is not None
            and request.headers.get(self.config.bypass_header) is not None
        ):
            request.ctx[_STATE] = _CacheState("BYPASS", reason="bypass header")
            return None
        rule = request_rule(request.method, request.headers, self.methods)
        if not rule.lookup and not rule.store:
            request.ctx[_STATE] = _CacheState("BYPASS", rule, reason=rule.reason)
            return None
        primary = self.primary_for(request)
        state = _CacheState("MISS", rule, primary, _cache.primary_key(primary), request_time=now)
        request.ctx[_STATE] = state
        header = _header_getter(request)
        if rule.lookup:
            entry = self.store.lookup(primary, header, now)
            if entry is not None and rule.accepts(entry.age(now), entry.ttl):
                return self._hit(state, entry, now)
            if self.tier is not None or self.store.in_flight(state.key):
                return self._slow_lookup(request, state, header)
            if rule.only_if_cached:
                return self._not_cached(state)
        state.leader = self.store.join(state.key, _ignore)
        return None

    def _hit(self, state: _CacheState, entry: Any, now: float) -> Response:
        state.verdict = "HIT"
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in entry.header_fields()
            if name.lower() != b"content-length"
        ]
        headers.append(("Age", str(entry.age(now))))
        return Response(entry.status, entry.body, headers)

    def _not_cached(self, state: _CacheState) -> Response:
        state.verdict = "BYPASS"
        state.reason = "only-if-cached miss"
        return Response.error(504, "not_cached", "The response is not in the cache (only-if-cached)")

    async def _slow_lookup(
        self, request: Request, state: _CacheState, header: Callable[[bytes], bytes | None]
    ) -> Response | None:
        """The Redis tier, then coalescing behind an in-flight fetch of the same resource."""
        assert state.rule is not None
        if self.tier is not None:
            try:
                entry = await self.tier.get_into(self.store, state.primary, header, self.clock())
            except Exception as exc:  # the tier is an optimisation: a broken Redis is a miss
                logger.warning("cache: redis lookup failed: %s", exc)
                entry = None
            now = self.clock()
            if entry is not None and state.rule.accepts(entry.age(now), entry.ttl):
                return self._hit(state, entry, now)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()

        def wake(entry: Any) -> None:
            if not waiter.done():
                waiter.set_result(entry)

        if self.store.join(state.key, wake):
            state.leader = True
        else:
            try:
                entry = await asyncio.wait_for(waiter, self.lock_timeout)
            except TimeoutError:
                entry = None
            now = self.clock()
            if entry is not None and (
                not entry.vary_names or entry.vary == self._request_vary(entry, header)
            ):
                return self._hit(state, entry, now)
        if state.rule.only_if_cached:
            self._release(state)
            return self._not_cached(state)
        return None

    @staticmethod
    def _request_vary(entry: Any, header: Callable[[bytes], bytes | None]) -> bytes:
        material: bytes = _cache.vary_material([header(name) for name in entry.vary_names])
        return material

    # --- response and log ---------------------------------------------------------------------

    def response(self, request: Request, response: ResponseHead) -> None:
        state: _CacheState | None = request.ctx.get(_STATE)
        if state is None or state.verdict == "HIT":
            return
        if state.verdict == "BYPASS" or state.rule is None or not state.rule.store or request.method != "GET":
            response.headers.set("X-Cache", "BYPASS")
            self._release(state)
            return
        now = self.clock()
        decision = decide_response(
            request.method,
            request.headers,
            response.status,
            response.headers,
            default_ttl=self.default_ttl,
            statuses=self.statuses,
            methods=self.methods,
            request_time=state.request_time,
            response_time=now,
        )
        if not decision.storable:
            state.verdict = "BYPASS"
            state.reason = decision.reason
            response.headers.set("X-Cache", "BYPASS")
            self._release(state)
            return
        response.headers.set("X-Cache", "MISS")
        vary_names = self._vary_for(decision.vary)
        header = _header_getter(request)
        vary = _cache.vary_material([header(name) for name in vary_names]) if vary_names else b""
        fields = [
            (name.encode("latin-1", "replace"), value.encode("latin-1", "replace"))
            for name, value in response.headers
        ]
        head = _cache.stored_head(response.status, _reason(response.status), fields)
        fill = self.store.begin(
            state.primary,
            normalize_host(request.headers.get("host")),
            request.path.encode("latin-1", "replace"),
            vary_names,
            vary,
            head,
            response.status,
            decision.ttl,
            decision.initial_age,
            now,
        )
        state.leader = False  # the Fill releases the waiters on commit or abort
        request.ctx[BODY_SINK_KEY] = fill

    def log(self, request: Request, response: ResponseHead) -> None:
        fill = request.ctx.pop(BODY_SINK_KEY, None)
        if fill is not None and fill.active:
            fill.abort()  # the engine did not finish feeding it: nothing stored, waiters go upstream
        state: _CacheState | None = request.ctx.get(_STATE)
        if state is not None:
            self._release(state)

    def _release(self, state: _CacheState) -> None:
        if state.leader:
            state.leader = False
            self.store.release(state.key, None)

    # --- Redis tier and purge -----------------------------------------------------------------

    def _write_through(self, entry: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # committed outside a loop (tests, tools): the local store has it
        task = loop.create_task(self._write(entry))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, entry: Any) -> None:
        try:
            await self.tier.set(entry, self.clock())
        except Exception as exc:
            logger.warning("cache: redis store failed: %s", exc)

    async def purge(self, key: str | None = None, prefix: str | None = None) -> int:
        """Admin purge: by key ("host/path?query", optionally "METHOD " first, or the 16-hex-digit
        primary key) or by path prefix. Returns the number of local entries dropped (plus the
        resources dropped from Redis)."""
        dropped = self.purge_local(key, prefix)
        if self.tier is None:
            return dropped
        if prefix is not None:
            dropped += await self.tier.purge_prefix(prefix.encode("latin-1"))
        elif key is not None and _is_hex_key(key):
            dropped += await self.tier.purge_key(int(key, 16))
        elif key is not None:
            dropped += await self.tier.purge(key_material(key))
        return dropped

    def purge_local(self, key: str | None = None, prefix: str | None = None) -> int:
        """purge() on this worker's store only (other workers relay an admin purge this way)."""
        if prefix is not None:
            dropped: int = self.store.purge_prefix(prefix.encode("latin-1"))
            return dropped
        if key is None:
            return 0
        if _is_hex_key(key):
            dropped = self.store.purge_key(int(key, 16))
            return dropped
        dropped = self.store.purge(key_material(key))
        return dropped

    async def close(self) -> None:
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        if self.tier is not None:
            await self.tier.close()


class EngineMiss:
    """A miss on the compiled path: what the engine asks when the upstream response head arrives."""

    __slots__ = ("fields", "key", "leader", "plugin", "primary", "request_time")

    def __init__(
        self,
        plugin: ResponseCachePlugin,
        primary: bytes,
        key: int,
        fields: list[tuple[bytes, bytes]],
        request_time: float,
        leader: bool,
    ) -> None:
        self.plugin = plugin
        self.primary = primary
        self.key = key
        self.fields = fields  # the request's header fields as received
        self.request_time = request_time
        self.leader = leader  # first of the coalesced misses: others wait for this fetch

    def begin(self, status: int, reason: bytes, response_fields: list[tuple[bytes, bytes]]) -> Any:
        """A Fill for a storable GET response (the engine tees the body into it), else None."""
        plugin = self.plugin
        now = plugin.clock()
        decision = decide_response(
            "GET",
            [(name.decode("latin-1"), value.decode("latin-1")) for name, value in self.fields],
            status,
            [(name.decode("latin-1"), value.decode("latin-1")) for name, value in response_fields],
            default_ttl=plugin.default_ttl,
            statuses=plugin.statuses,
            methods=plugin.methods,
            request_time=self.request_time,
            response_time=now,
        )
        if not decision.storable:
            self.release()
            return None
        vary_names = plugin._vary_for(decision.vary)
        vary = _cache.vary_material([self._header(name) for name in vary_names]) if vary_names else b""
        _, host, path, _ = self.primary.split(b"\0", 3)
        head = _cache.stored_head(status, reason or _reason(status), response_fields)
        fill = plugin.store.begin(
            self.primary, host, path, vary_names, vary, head, status, decision.ttl, decision.initial_age, now
        )
        self.leader = False  # the Fill wakes the waiters when it commits or aborts
        return fill

    def release(self) -> None:
        """No Fill took over: the coalesced waiters go upstream themselves."""
        if self.leader:
            self.leader = False
            self.plugin.store.release(self.key, None)

    def _header(self, name: bytes) -> bytes | None:
        values = [value for field, value in self.fields if field.lower() == name]
        return b", ".join(values) if values else None


def key_material(key: str) -> bytes:
    """Primary key material of an admin key like "api.example.com/items/1?page=2" or "GET host/..."."""
    method, _, rest = key.strip().partition(" ")
    if not rest:
        method, rest = "GET", method
    if method.upper() == "HEAD":
        method = "GET"
    rest = rest.removeprefix("https://").removeprefix("http://")
    host, slash, target = rest.partition("/")
    path, _, query = ("/" + target if slash else "/").partition("?")
    material: bytes = _cache.primary_material(
        method.upper().encode("latin-1"),
        normalize_host(host),
        path.encode("latin-1"),
        query.encode("latin-1"),
    )
    return material


def _is_hex_key(key: str) -> bool:
    return len(key) == 16 and all(c in "0123456789abcdef" for c in key.lower())


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("latin-1")
    except ValueError:
        return b"Unknown"


def _ignore(entry: Any) -> None:
    """The leader's own join callback placeholder (leaders are never called back)."""


PLUGIN = ResponseCachePlugin
