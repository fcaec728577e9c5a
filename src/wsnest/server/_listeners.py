"""Listening sockets: every address of a TCP host, Unix domain sockets, and
sockets the caller bound. Plain ``socket`` work, no trio: the server and
the worker supervisor (which must not start trio before it forks) share it.

Decisions:

- A host that resolves to several addresses gets one socket per address
  (an empty host: every IPv4 and IPv6 interface). With port 0 the first
  socket picks the port and the others reuse it.
- A lone IPv6 address (``[::]``) is dual stack: ``IPV6_V6ONLY`` is cleared,
  so IPv4 clients are served too (their ``::ffff:a.b.c.d`` addresses are
  shown as ``a.b.c.d``). Beside IPv4 sockets, IPv6 sockets are IPv6 only.
- A Unix socket file is made under a umask that leaves it owner-only, then
  chmod-ed to ``mode`` (0o660 by default: owner and group, e.g. a proxy in
  the socket's group); it is removed on close if it is still ours (same
  inode).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import sys
from collections.abc import Sequence

#: Default permissions of a Unix socket file: owner and group may connect.
UDS_MODE = 0o660

BACKLOG = socket.SOMAXCONN

# SO_REUSEPORT spreads connections over the sockets of a group on Linux
# only; elsewhere the last socket bound may get them all.
HAS_REUSEPORT_LB = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")

Address = tuple[int, tuple[object, ...]]  # (family, sockaddr)


class Listener:
    """A listening socket, its URL, and the socket file it created (if any)."""

    __slots__ = ("_uds_ident", "_uds_path", "sock", "unmap", "url")

    def __init__(self, sock: socket.socket, url: str, uds: tuple[str, tuple[int, int]] | None = None) -> None:
        self.sock = sock
        self.url = url
        #: A dual-stack IPv6 socket: IPv4 peers arrive as ::ffff:a.b.c.d.
        self.unmap = sock.family == socket.AF_INET6 and not _v6only(sock)
        self._uds_path: str | None = uds[0] if uds is not None else None
        self._uds_ident: tuple[int, int] | None = uds[1] if uds is not None else None

    def __repr__(self) -> str:
        return f"<Listener {self.url}>"

    def close(self) -> None:
        """Close the socket; remove the socket file if we made it and it is
        still ours (another server may have replaced it since)."""
        self.sock.close()
        path, ident = self._uds_path, self._uds_ident
        self._uds_path = None
        if path is not None:
            try:
                st = os.stat(path)
                if (st.st_dev, st.st_ino) == ident:
                    os.unlink(path)
            except OSError:
                pass

    def forget_file(self) -> None:
        """Never remove the socket file (a forked worker: its parent owns it)."""
        self._uds_path = None


def cannot_listen(where: str, exc: OSError) -> OSError:
    """The error for a failed bind or listen, naming the address."""
    reason = exc.strerror or str(exc)
    error = OSError(exc.errno, f"cannot listen on {where}: {reason}")
    error.__cause__ = exc
    return error


def hostport(host: str, port: int) -> str:
    """``127.0.0.1:80`` or ``[::1]:80``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listener_url(scheme: str, sock: socket.socket) -> str:
    """The URL of a bound socket: ``http://[::1]:8080`` or ``unix:/run/app.sock``."""
    if sock.family == socket.AF_UNIX:
        name = sock.getsockname()
        return "unix:" + (name.decode(errors="replace") if isinstance(name, bytes) else name)
    host, port = sock.getsockname()[:2]
    return f"{scheme}://{hostport(host, port)}"


def _v6only(sock: socket.socket) -> bool:
    try:
        return bool(sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
    except OSError:
        return True


# -- TCP ------------------------------------------------------------------------


def resolve(host: str, port: int) -> list[Address]:
    """Every distinct address of ``host`` (all interfaces if empty)."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise cannot_listen(hostport(host, port), exc) from None
    found: list[Address] = []
    for family, _, _, _, addr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and (family, addr) not in found:
            found.append((family, addr))
    if not found:
        raise OSError(errno.EADDRNOTAVAIL, f"cannot listen on {hostport(host, port)}: no IPv4 or IPv6 address")
    return found


def open_tcp(addresses: Sequence[Address], *, reuse_port: bool = False, listen: bool = True) -> list[socket.socket]:
    """Bind one socket per address (and listen unless ``listen=False``).

    Port 0 on several addresses: the first picks it, the others take the
    same; if that port is taken on another address, start over (a few times).
    """
    dual_stack = not any(family == socket.AF_INET for family, _ in addresses)
    want_port = int(addresses[0][1][1])  # type: ignore[call-overload]
    for attempt in range(8):
        sockets: list[socket.socket] = []
        port = want_port
        try:
            for family, addr in addresses:
                where = hostport(str(addr[0]), port)
                try:
                    sock = socket.socket(family, socket.SOCK_STREAM)
                except OSError as exc:
                    if exc.errno == errno.EAFNOSUPPORT and len(addresses) > 1:
                        continue  # e.g. no IPv6 in this kernel: serve the other family
                    raise cannot_listen(where, exc) from None
                sockets.append(sock)
                try:
                    _bind(sock, family, (addr[0], port, *addr[2:]), reuse_port, dual_stack, listen)
                except OSError as exc:
                    retry = want_port == 0 and port != 0 and exc.errno == errno.EADDRINUSE and attempt < 7
                    if retry:
                        raise _Retry from None
                    raise cannot_listen(where, exc) from None
                port = sock.getsockname()[1]
        except _Retry:
            for sock in sockets:
                sock.close()
            continue
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        if not sockets:
            raise OSError(errno.EAFNOSUPPORT, "cannot listen: no address family is supported")
        return sockets
    raise AssertionError("unreachable")  # pragma: no cover


class _Retry(Exception):
    pass


def _bind(
    sock: socket.socket,
    family: int,
    addr: tuple[object, ...],
    reuse_port: bool,
    dual_stack: bool,
    listen: bool,
) -> None:
    if sys.platform != "win32":  # on Windows it would let another process steal the port
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual_stack else 1)
    sock.bind(addr)
    if listen:
        sock.listen(BACKLOG)
    sock.setblocking(False)


# -- Unix domain sockets ------------------------------------------------------------


def open_unix(path: str, mode: int = UDS_MODE) -> Listener:
    """Listen on a Unix socket at ``path`` (mode ``mode``).

    A stale socket file (nobody answers on it) is replaced; a live server's
    socket, or a path that is not a socket, is an error naming the path.
    """
    where = f"unix:{path}"
    if not hasattr(socket, "AF_UNIX"):
        raise OSError(errno.EAFNOSUPPORT, f"cannot listen on {where}: Unix sockets are not supported here")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise cannot_listen(where, exc) from None
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(errno.EEXIST, f"cannot listen on {where}: the path exists and is not a socket")
        if _answers(path):
            raise OSError(errno.EADDRINUSE, f"cannot listen on {where}: in use by a running server")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # stale: its server is gone
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # Owner-only while it is created (no moment with wider access),
        # then widened to `mode`. The umask is process-wide: brief.
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, mode)
        st = os.stat(path)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise cannot_listen(where, exc) from None
    return Listener(sock, where, (path, (st.st_dev, st.st_ino)))


def _answers(path: str) -> bool:
    """Whether a server accepts connections on the socket file ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:
            return True  # e.g. a full backlog (EAGAIN): someone is there
        return True


# -- sockets from the caller ------------------------------------------------------------


def adopt(sock: socket.socket | int) -> socket.socket:
    """Check a caller's bound socket (or file descriptor) for serving.

    Raises TypeError/ValueError naming ``sock`` for anything but a bound
    SOCK_STREAM socket of family AF_INET, AF_INET6 or AF_UNIX.
    """
    if isinstance(sock, bool) or not isinstance(sock, (socket.socket, int)):
        raise TypeError(f"sock: expected a socket.socket or a file descriptor, got {type(sock).__name__}")
    if isinstance(sock, int):
        try:
            sock = socket.socket(fileno=sock)
        except OSError as exc:
            raise ValueError(f"sock: file descriptor {sock} is not a socket ({exc.strerror or exc})") from None
        try:
            return _check(sock)
        except ValueError:
            sock.detach()  # refused: the descriptor stays the caller's, open
            raise
    return _check(sock)


def _check(sock: socket.socket) -> socket.socket:
    families = (socket.AF_INET, socket.AF_INET6, getattr(socket, "AF_UNIX", -1))
    if sock.family not in families or sock.type != socket.SOCK_STREAM:
        raise ValueError(f"sock: expected a TCP or Unix stream socket, got {sock.family!r}/{sock.type!r}")
    try:
        name = sock.getsockname()
    except OSError as exc:
        raise ValueError(f"sock: cannot read its address ({exc.strerror or exc})") from None
    if name in ("", b"") or (isinstance(name, tuple) and name[1] == 0):
        raise ValueError("sock: the socket is not bound (bind it first, or pass a URL instead)")
    return sock


def listen_adopted(sock: socket.socket, scheme: str) -> Listener:
    """Listen on an adopted socket unless it already listens (keeping
    the backlog its creator, e.g. systemd, chose)."""
    listening = False
    accept_conn = getattr(socket, "SO_ACCEPTCONN", None)
    if accept_conn is not None:
        try:
            listening = bool(sock.getsockopt(socket.SOL_SOCKET, accept_conn))
        except OSError:
            listening = False
    try:
        if not listening:
            sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        raise cannot_listen(listener_url(scheme, sock), exc) from None
    return Listener(sock, listener_url(scheme, sock))
