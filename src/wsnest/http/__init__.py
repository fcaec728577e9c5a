"""HTTP/1.1 layer: request parsing (on llhttp via httptools), the request
object, header mapping and response serialisation. No sockets, no trio."""

from ._headers import Headers
from ._parser import RequestParser
from ._request import Request
from ._response import build_response, reason_phrase

__all__ = ["Headers", "Request", "RequestParser", "build_response", "reason_phrase"]
