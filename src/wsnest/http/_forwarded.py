"""Who the client is behind a reverse proxy: ``Forwarded`` (RFC 7239),
``X-Forwarded-For`` and ``X-Forwarded-Proto``, believed from trusted
peers only (sans-I/O).

Each proxy appends the address it got the request from, so the list is
read from the right: the right-most entry was added by our peer, and the
first address (from the right) that is not itself a trusted proxy is the
client. Anything a client wrote further left is never reached unless every
address after it is trusted. A malformed header is ignored as a whole.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from ._headers import Headers

__all__ = ["ProxyTrust", "parse_forwarded", "parse_node"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PAIR = re.compile(rf'[ \t]*({_TOKEN})=({_TOKEN}|"(?:[^"\\]|\\.)*")[ \t]*')
_UNESCAPE = re.compile(r"\\(.)")
_OBFUSCATED = re.compile(r"_[A-Za-z0-9._-]+")
_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


def _address(text: str) -> Address | None:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped  # a dual-stack socket's IPv4 peer
    return addr


def parse_node(text: str, brackets_required: bool = True) -> tuple[str, int, bool] | None:
    """Parse a node: ``IPv4[:port]``, ``"[IPv6]"[:port]``, ``unknown`` or
    an obfuscated ``_id`` (RFC 7239 section 6), port a number or ``_id``.

    Returns ``(host, port, is_address)`` (port 0 when none or obfuscated;
    IPv6 without brackets) or None when malformed. ``brackets_required=False``
    also takes a bare IPv6 address (``X-Forwarded-For``).
    """
    port_text = ""
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            return None
        host, rest = text[1:close], text[close + 1 :]
        if rest:
            if rest[0] != ":" or len(rest) == 1:
                return None
            port_text = rest[1:]
        if ":" not in host:
            return None  # brackets hold IPv6 only
        addr = _address(host)
    elif text.count(":") > 1:  # a bare IPv6 address
        if brackets_required:
            return None
        addr = _address(text)
    else:
        host, colon, port_text = text.partition(":")
        if colon and not port_text:
            return None
        if host == "unknown" or _OBFUSCATED.fullmatch(host):
            port = _port(port_text)
            return None if port is None else (host, port, False)
        addr = _address(host)
    port = _port(port_text)
    if addr is None or port is None:
        return None
    return str(addr), port, True


def _port(text: str) -> int | None:
    """A node port: digits (0-65535), an obfuscated ``_id`` (0) or none (0)."""
    if not text:
        return 0
    if _OBFUSCATED.fullmatch(text):
        return 0
    if text.isdigit() and text.isascii() and len(text) <= 5 and int(text) <= 65535:
        return int(text)
    return None


def parse_forwarded(values: Sequence[str]) -> list[dict[str, str]] | None:
    """The elements of ``Forwarded`` header values, in order, each a dict
    of its (lowercased) parameters with quotes removed; None if malformed
    (a bad pair, a parameter twice in one element)."""
    elements: list[dict[str, str]] = []
    for value in values:
        element: dict[str, str] = {}
        pos, end = 0, len(value)
        while pos < end:
            char = value[pos]
            if char in " \t":
                pos += 1
                continue
            if char == ",":  # empty list elements are allowed (RFC 9110 5.6.1)
                if element:
                    elements.append(element)
                    element = {}
                pos += 1
                continue
            match = _PAIR.match(value, pos)
            if match is None:
                return None
            name, raw = match.group(1).lower(), match.group(2)
            if name in element:
                return None
            element[name] = _UNESCAPE.sub(r"\1", raw[1:-1]) if raw.startswith('"') else raw
            pos = match.end()
            if pos < end:
                if value[pos] == ";":
                    pos += 1
                elif value[pos] != ",":
                    return None
        if element:
            elements.append(element)
    return elements


def _scheme(value: str | None) -> str | None:
    return None if value is None else _SCHEMES.get(value.strip(" \t").lower())


class ProxyTrust:
    """The proxies whose headers are believed: ``forwarded_allow_ips`` as
    a comma-separated string or a sequence of IP addresses and networks
    (CIDR); ``"*"`` trusts every peer. A peer without an address (a Unix
    socket: only local processes allowed by the file's permissions can
    connect) is always trusted."""

    __slots__ = ("_cache", "_networks", "everyone")

    def __init__(self, allow: str | Sequence[str]) -> None:
        if isinstance(allow, str):
            items = allow.split(",")
        elif isinstance(allow, Sequence):
            items = list(allow)
        else:
            raise ValueError(f"forwarded_allow_ips: expected a string or a list of addresses, got {allow!r}")
        networks: list[Network] = []
        everyone = False
        for item in items:
            if not isinstance(item, str):
                raise ValueError(f"forwarded_allow_ips: expected addresses as strings, got {item!r}")
            item = item.strip()
            if not item:
                continue
            if item == "*":
                everyone = True
                continue
            try:
                networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
            except ValueError:
                raise ValueError(f"forwarded_allow_ips: not an IP address or network: {item!r}") from None
        self.everyone = everyone
        self._networks = tuple(networks)
        self._cache: dict[str, bool] = {}

    def trusts(self, host: str | None) -> bool:
        """Whether the peer ``host`` (an address; None: a Unix socket) is a trusted proxy."""
        if host is None or self.everyone:
            return True
        known = self._cache.get(host)
        if known is None:
            addr = _address(host)
            known = addr is not None and any(addr in net for net in self._networks)
            if len(self._cache) >= 1024:
                self._cache.clear()
            self._cache[host] = known
        return known

    def resolve(
        self, headers: Headers, peer: tuple[str, int] | None, scheme: str
    ) -> tuple[tuple[str, int] | None, str]:
        """The client address and scheme of a request from ``peer``: from
        its proxy headers when ``peer`` is trusted, else ``(peer, scheme)``."""
        if not self.trusts(None if peer is None else peer[0]):
            return peer, scheme
        forwarded = headers.getall("forwarded")
        if forwarded:
            elements = parse_forwarded(forwarded)
            if elements:
                found = self._walk_forwarded(elements, peer, scheme)
                if found is not None:
                    return found
        return self._x_forwarded(headers, peer, scheme)

    def _walk_forwarded(
        self, elements: list[dict[str, str]], peer: tuple[str, int] | None, scheme: str
    ) -> tuple[tuple[str, int] | None, str] | None:
        nodes: list[tuple[tuple[str, int, bool] | None, str | None]] = []
        for element in elements:
            node = element.get("for")
            parsed = None if node is None else parse_node(node)
            if node is not None and parsed is None:
                return None  # a malformed node: the header is ignored
            proto = element.get("proto")
            if proto is not None and _scheme(proto) is None:
                return None
            nodes.append((parsed, _scheme(proto)))
        client = peer
        for parsed, proto in reversed(nodes):
            if proto is not None:
                scheme = proto
            if parsed is None:
                break  # this proxy did not say whom it got the request from
            host, port, is_address = parsed
            client = (host, port)
            if not (is_address and self.trusts(host)):
                break
        return client, scheme

    def _x_forwarded(
        self, headers: Headers, peer: tuple[str, int] | None, scheme: str
    ) -> tuple[tuple[str, int] | None, str]:
        protos = [p.strip(" \t") for v in headers.getall("x-forwarded-proto") for p in v.split(",")]
        if any(_scheme(p) is None for p in protos):
            protos = []  # malformed: ignored
        hops = [h.strip(" \t") for v in headers.getall("x-forwarded-for") for h in v.split(",")]
        hops = [h for h in hops if h]
        parsed = [parse_node(h, brackets_required=False) for h in hops]
        if not hops or any(p is None or not p[2] for p in parsed):
            # No usable X-Forwarded-For: the nearest proxy's scheme only.
            return peer, (_scheme(protos[-1]) or scheme) if protos else scheme
        client = peer
        chosen = len(parsed) - 1
        for index in range(len(parsed) - 1, -1, -1):
            node = parsed[index]
            assert node is not None
            client, chosen = (node[0], node[1]), index
            if not self.trusts(node[0]):
                break
        if len(protos) == len(hops):
            scheme = _scheme(protos[chosen]) or scheme
        elif len(protos) == 1:
            scheme = _scheme(protos[0]) or scheme
        return client, scheme
