"""permessage-deflate (RFC 7692), sans-I/O: negotiation, inflating, deflating.

No sockets and no trio: the server's handshake code asks :func:`negotiate`
for the response to a client's ``Sec-WebSocket-Extensions`` offers, the
client's sends :func:`client_offer` and checks the server's answer with
:func:`accept_response`, and the session
runs every compressed message through an :class:`Inflater` (received, after
the parser reassembled it) or a :class:`Deflater` (sent).

Choices (see the README for what a user sees):

- The first acceptable ``permessage-deflate`` offer wins. An offer with an
  unknown or repeated parameter, a bad value, or ``server_max_window_bits=8``
  (raw deflate in zlib cannot keep to a 256-byte window) is declined, and
  so is anything malformed: negotiation never raises.
- Our compressor uses a 4 KiB window (12 bits, fewer if the client asks),
  memLevel 5 and level 1: about 39 KB per connection instead of zlib's
  default ~260 KB, and the cheapest level (compressing is by far the
  largest cost of a compressed message). Our decompressor needs the full
  32 KiB window (the client's window is not restricted): about 40 KB.
- Both are created on first use, and dropped after every message when the
  client asked for no context takeover on that side, so an idle connection
  then holds neither.
- Decompression is bounded: a message never inflates past
  ``max_message_size + 1`` bytes in memory, however small it was on the
  wire (a "zip bomb" costs at most the limit).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from ._common import CLOSE_INVALID_DATA, CLOSE_TOO_BIG

EXTENSION = "permessage-deflate"

#: Window bits of our compressor unless the client asks for fewer (a 4 KiB
#: window: most of the ratio of 32 KiB for an eighth of the memory).
SERVER_WINDOW_BITS = 12
#: zlib memLevel of our compressor (its hash table: 16 KiB at 5, 256 KiB at 9).
MEM_LEVEL = 5
#: zlib level 1: on JSON-like text about 1.5x faster than zlib's default 6
#: for output about 25 % larger (still a sixth of the input); compressing
#: costs far more CPU than anything else a message goes through.
COMPRESSION_LEVEL = 1
#: Messages shorter than this are sent uncompressed (RSV1 clear, which RFC
#: 7692 allows): deflating them saves a few bytes for microseconds of CPU.
MIN_COMPRESS_SIZE = 32

#: Failure reasons (close 1009 and 1007), in the style of the core's.
R_INFLATE_TOO_BIG = "message too big after decompression"
R_INFLATE_BAD = "invalid compressed data"

# The end of a flushed DEFLATE stream: the LEN/NLEN of an empty stored block.
# Senders strip it from every message and receivers put it back (RFC 7692
# section 7.2.1 and 7.2.2).
_TAIL = b"\x00\x00\xff\xff"
_WINDOW_VALUES = {str(bits): bits for bits in range(8, 16)}  # "8".."15": 1*DIGIT, no leading 0
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class DeflateError(Exception):
    """A compressed message the connection must fail with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class DeflateParams:
    """The agreed parameters of one connection (an accepted offer).

    The names are RFC 7692's: ``server_*`` is about the server's compressor
    (the client's decompressor), ``client_*`` about the client's
    compressor, whichever end holds the object. The docs of the fields
    speak as the server; :func:`accept_response` fills them for a client.
    """

    #: The client asked us not to keep our compression context across messages.
    server_no_context_takeover: bool = False
    #: The client will not keep its context: our decompressor is reset per message.
    client_no_context_takeover: bool = False
    #: The client's bound on our window (echoed in the response), or None.
    server_max_window_bits: int | None = None
    #: The server's bound on the client's window, or None (15 bits). Only a
    #: client fills it: our server leaves the client's window unbounded.
    client_max_window_bits: int | None = None

    @property
    def window_bits(self) -> int:
        """The window bits our compressor uses."""
        offered = self.server_max_window_bits
        return SERVER_WINDOW_BITS if offered is None else min(offered, SERVER_WINDOW_BITS)

    def response(self) -> str:
        """The ``Sec-WebSocket-Extensions`` value of the 101."""
        parts = [EXTENSION]
        if self.server_no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.server_max_window_bits is not None:
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        return "; ".join(parts)


# -- negotiation -----------------------------------------------------------------

Offer = tuple[str, list[tuple[str, str | None]]]


def _tokens(text: str) -> list[tuple[str, str]]:
    """Lex a header value into ``(kind, text)``: ``"t"`` token, ``"q"`` quoted
    string (unescaped), ``";"``, ``","``, ``"="``, or ``"!"`` for anything
    else (which spoils the offer it is in). An unterminated quote swallows
    the rest of the value."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t":
            i += 1
        elif ch in ";,=":
            out.append((ch, ch))
            i += 1
        elif ch == '"':
            value: list[str] = []
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\":
                    i += 1
                    if i == n:
                        break
                value.append(text[i])
                i += 1
            if i >= n:
                out.append(("!", text))
                break
            out.append(("q", "".join(value)))
            i += 1
        elif ch in _TCHAR:
            start = i
            while i < n and text[i] in _TCHAR:
                i += 1
            out.append(("t", text[start:i]))
        else:
            out.append(("!", ch))
            i += 1
    return out


def _offer(tokens: list[tuple[str, str]]) -> Offer | None:
    """``extension-token *( ";" token [ "=" (token | quoted-string) ] )``
    (RFC 6455 section 9.1); None if the tokens do not make one."""
    if not tokens or tokens[0][0] != "t":
        return None
    params: list[tuple[str, str | None]] = []
    i, n = 1, len(tokens)
    while i < n:
        if tokens[i][0] != ";" or i + 1 >= n or tokens[i + 1][0] != "t":
            return None
        name = tokens[i + 1][1]
        i += 2
        value = None
        if i < n and tokens[i][0] == "=":
            if i + 1 >= n or tokens[i + 1][0] not in ("t", "q"):
                return None
            value = tokens[i + 1][1]
            i += 2
        params.append((name, value))
    return tokens[0][1], params


def parse_extensions(values: Iterable[str]) -> list[Offer | None]:
    """The offers of ``Sec-WebSocket-Extensions`` header values, in order:
    ``(name, [(param, value or None), ...])``, or None for a malformed one.
    Empty list elements are skipped (RFC 9110 section 5.6.1)."""
    offers: list[Offer | None] = []
    for value in values:
        current: list[tuple[str, str]] = []
        for token in [*_tokens(value), (",", ",")]:
            if token[0] != ",":
                current.append(token)
            elif current:
                offers.append(None if any(kind == "!" for kind, _ in current) else _offer(current))
                current = []
    return offers


def _accept(params: list[tuple[str, str | None]]) -> DeflateParams | None:
    """The parameters to agree to for one permessage-deflate offer, or None
    to decline it (RFC 7692 section 7.1)."""
    seen: set[str] = set()
    server_nct = client_nct = False
    server_bits: int | None = None
    for raw_name, value in params:
        name = raw_name.lower()
        if name in seen:
            return None
        seen.add(name)
        if name in ("server_no_context_takeover", "client_no_context_takeover"):
            if value is not None:
                return None
            if name == "server_no_context_takeover":
                server_nct = True
            else:
                client_nct = True
        elif name == "server_max_window_bits":
            bits = _WINDOW_VALUES.get(value) if value is not None else None
            if bits is None or bits == 8:
                return None
            server_bits = bits
        elif name == "client_max_window_bits":
            # We inflate with a 15-bit window, so the client may use any; the
            # response leaves it unrestricted.
            if value is not None and value not in _WINDOW_VALUES:
                return None
        else:
            return None
    return DeflateParams(server_nct, client_nct, server_bits)


def negotiate(values: Iterable[str]) -> DeflateParams | None:
    """The parameters of the first acceptable permessage-deflate offer in the
    client's ``Sec-WebSocket-Extensions`` header values, or None."""
    for offer in parse_extensions(values):
        if offer is not None and offer[0].lower() == EXTENSION:
            accepted = _accept(offer[1])
            if accepted is not None:
                return accepted
    return None


# -- negotiation, client side -------------------------------------------------------


class DeflateNegotiationError(ValueError):
    """A server's ``Sec-WebSocket-Extensions`` answer the client cannot accept."""


def client_offer(client_max_window_bits: bool = True) -> str:
    """The ``Sec-WebSocket-Extensions`` value a client offers: permessage-deflate
    with default parameters, and by default ``client_max_window_bits`` (the
    server may then bound our window, saving its decompressor memory)."""
    return f"{EXTENSION}; client_max_window_bits" if client_max_window_bits else EXTENSION


def _window_bits(name: str, value: str | None) -> int:
    bits = _WINDOW_VALUES.get(value) if value is not None else None
    if bits is None:
        raise DeflateNegotiationError(f"{EXTENSION}: {name} must be an integer from 8 to 15, got {value!r}")
    return bits


def accept_response(values: Iterable[str], *, client_max_window_bits: bool = True) -> DeflateParams:
    """The parameters the server agreed to in its ``Sec-WebSocket-Extensions``
    header values, for a client that offered :func:`client_offer`
    (``client_max_window_bits`` tells whether that offer included it).

    Raises :class:`DeflateNegotiationError` unless the answer is exactly one
    well-formed permessage-deflate with known parameters, none repeated,
    window bits 8 to 15, and ``client_max_window_bits`` only if offered
    (RFC 7692 section 7.1)."""
    offers = parse_extensions(values)
    if not offers:
        raise DeflateNegotiationError("the server's Sec-WebSocket-Extensions header is empty")
    for offer in offers:
        if offer is None:
            raise DeflateNegotiationError("malformed Sec-WebSocket-Extensions header from the server")
        if offer[0].lower() != EXTENSION:
            raise DeflateNegotiationError(f"the server chose extension {offer[0]!r}, which was not offered")
    if len(offers) > 1:
        raise DeflateNegotiationError(f"the server chose {EXTENSION} {len(offers)} times")
    assert offers[0] is not None
    seen: set[str] = set()
    server_nct = client_nct = False
    server_bits: int | None = None
    client_bits: int | None = None
    for raw_name, value in offers[0][1]:
        name = raw_name.lower()
        if name in seen:
            raise DeflateNegotiationError(f"{EXTENSION}: parameter {name} repeated")
        seen.add(name)
        if name in ("server_no_context_takeover", "client_no_context_takeover"):
            if value is not None:
                raise DeflateNegotiationError(f"{EXTENSION}: {name} takes no value, got {value!r}")
            if name == "server_no_context_takeover":
                server_nct = True
            else:
                client_nct = True
        elif name == "server_max_window_bits":
            # Any window: our decompressor has the full 32 KiB one.
            server_bits = _window_bits(name, value)
        elif name == "client_max_window_bits":
            if not client_max_window_bits:
                raise DeflateNegotiationError(f"{EXTENSION}: the server sent {name}, which was not offered")
            client_bits = _window_bits(name, value)
        else:
            raise DeflateNegotiationError(f"{EXTENSION}: unknown parameter {raw_name!r}")
    return DeflateParams(server_nct, client_nct, server_bits, client_bits)


# -- compression -------------------------------------------------------------------


class Inflater:
    """Decompresses the messages of one connection (the client's stream)."""

    __slots__ = ("_reset", "_z")

    def __init__(self, no_context_takeover: bool = False) -> None:
        self._reset = no_context_takeover
        self._z: zlib._Decompress | None = None

    def decompress(self, payload: bytes, max_size: int | None) -> bytes:
        """Inflate one message. Raises :class:`DeflateError`: 1009 as soon as
        the output would exceed ``max_size`` (None: no bound), 1007 for data
        that is not DEFLATE."""
        z = self._z
        if z is None:
            z = zlib.decompressobj(-zlib.MAX_WBITS)
        # max_length caps the output buffer zlib grows: one byte past the
        # limit proves the message too big without inflating any further.
        limit = 0 if max_size is None else max_size + 1
        try:
            out = z.decompress(payload, limit)
            if limit and len(out) == limit:
                raise DeflateError(CLOSE_TOO_BIG, R_INFLATE_TOO_BIG)
            rest = z.decompress(_TAIL, limit - len(out) if limit else 0)
        except zlib.error:
            raise DeflateError(CLOSE_INVALID_DATA, R_INFLATE_BAD) from None
        if rest:
            out += rest
            if limit and len(out) >= limit:
                raise DeflateError(CLOSE_TOO_BIG, R_INFLATE_TOO_BIG)
        # A block with BFINAL set ends the stream (RFC 7692 section 7.2.3.4
        # allows it): the next message starts a new one. Bytes after it (the
        # sender's empty block header) are ignored.
        self._z = None if self._reset or z.eof else z
        return out


class Deflater:
    """Compresses the messages of one connection (our stream)."""

    __slots__ = ("_bits", "_reset", "_z")

    def __init__(self, window_bits: int = SERVER_WINDOW_BITS, no_context_takeover: bool = False) -> None:
        self._bits = window_bits
        self._reset = no_context_takeover
        self._z: zlib._Compress | None = None

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        """Deflate one message: the payload of a frame with RSV1 set."""
        z = self._z
        if z is None:
            z = zlib.compressobj(COMPRESSION_LEVEL, zlib.DEFLATED, -self._bits, MEM_LEVEL)
        out = z.compress(data)
        tail = z.flush(zlib.Z_SYNC_FLUSH)
        # Without context takeover a fresh compressor per message is about as
        # fast as a Z_FULL_FLUSH one, and frees its ~39 KB in between.
        self._z = None if self._reset else z
        # A sync flush ends with an empty stored block; its last 4 bytes
        # (00 00 ff ff) are not sent (RFC 7692 section 7.2.1).
        assert tail.endswith(_TAIL)
        return out + tail[:-4]  # no copy when out or the rest of tail is empty
