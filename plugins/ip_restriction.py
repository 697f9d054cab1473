"""ip-restriction: allow or deny clients by address (IPv4 and IPv6 CIDRs).

Semantics follow Kong's ip-restriction: a client matching ``deny`` is refused even when it
also matches ``allow`` (deny wins); when ``allow`` is set, a client outside it is refused.
The address checked is the peer address the gateway sees (``request.client_ip``).

The lists are compiled once into integer ranges per family, and parsed client addresses are
memoised, so a check is a dictionary hit plus a few integer comparisons.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Annotated

import msgspec

from gateway.plugins import Plugin, Request, Response
from gateway.units import describe_value

__all__ = ["PLUGIN", "AddressSet", "IpRestriction"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _doc(description: str) -> msgspec.Meta:
    return msgspec.Meta(description=description)


def parse_network(entry: str) -> _Network:
    """One list entry ("10.0.0.0/8", "2001:db8::/32", "192.0.2.7") as a network; ValueError if not."""
    try:
        return ipaddress.ip_network(entry.strip(), strict=True)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            raise ValueError(f"{describe_value(entry)} is not an IP address or CIDR block ({exc})") from None
        hint = describe_value(str(loose))
        raise ValueError(f"{describe_value(entry)} has host bits set (did you mean {hint}?)") from None


class IpRestrictionConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    allow: Annotated[
        list[str],
        _doc('Addresses or CIDR blocks allowed to call ("10.0.0.0/8", "2001:db8::/32"); empty = any.'),
    ] = []
    deny: Annotated[
        list[str], _doc("Addresses or CIDR blocks refused; a client on both lists is refused.")
    ] = []
    status: Annotated[int, msgspec.Meta(ge=400, le=599), _doc("HTTP status of the refusal (400 to 599).")] = (
        403
    )
    message: Annotated[str, _doc("Message in the JSON error body of the refusal.")] = (
        "Your IP address is not allowed"
    )

    def __post_init__(self) -> None:
        if not self.allow and not self.deny:
            raise ValueError("ip-restriction needs at least one of allow or deny")
        for key, entries in (("allow", self.allow), ("deny", self.deny)):
            for index, entry in enumerate(entries):
                try:
                    parse_network(entry)
                except ValueError as exc:
                    raise ValueError(f"{key}[{index}]: {exc}") from None


@lru_cache(maxsize=4096)
def _address_key(text: str) -> tuple[int, int] | None:
    """(IP version, integer address) of a client address; IPv4-mapped IPv6 counts as IPv4."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.version, int(address)


class AddressSet:
    """A fixed set of networks; membership of one address in O(number of networks)."""

    __slots__ = ("_ranges",)

    def __init__(self, entries: list[str]) -> None:
        ranges: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for entry in entries:
            network = parse_network(entry)
            ranges[network.version].append((int(network.network_address), int(network.broadcast_address)))
        self._ranges = {version: tuple(sorted(spans)) for version, spans in ranges.items()}

    def __bool__(self) -> bool:
        return any(self._ranges.values())

    def contains(self, client_ip: str) -> bool:
        key = _address_key(client_ip)
        if key is None:
            return False
        version, value = key
        return any(low <= value <= high for low, high in self._ranges[version])


class IpRestriction(Plugin):
    name = "ip-restriction"
    version = "1.0.0"
    priority = 990  # Kong's ip-restriction
    Config = IpRestrictionConfig

    def __init__(self, config: IpRestrictionConfig) -> None:
        super().__init__(config)
        self._allow = AddressSet(config.allow)
        self._deny = AddressSet(config.deny)
        self._restrict_to_allow = bool(config.allow)

    def access(self, request: Request) -> Response | None:
        ip = request.client_ip
        if self._deny.contains(ip) or (self._restrict_to_allow and not self._allow.contains(ip)):
            return Response.error(self.config.status, "ip_not_allowed", self.config.message)
        return None


PLUGIN = IpRestriction
