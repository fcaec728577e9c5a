"""Soak and fault-injection run for wsnest (loopback only, bounded, stops by itself).

    python bench/soak.py            # full run, a few minutes; writes docs/reliability.md
    python bench/soak.py --short    # CI-sized, about 40 s; prints only (--write-doc to write)

One wsnest server process (pinned to CPU 0) and several client processes
(pinned to CPU 1; the run's own process too), so that no process needs more
file descriptors than the hard limit (each raises its soft limit to it):

A. baseline   E echo clients (picows, ``bench/loadclient.py``) doing 64 B
              ping-pong: the unloaded msg/s.
B. load       I idle WebSocket connections held open (raw asyncio sockets,
              spread over holder processes), L slowloris connections
              dribbling a request head one byte every 0.5-1 s (each replaced
              when the server drops it), and the same E echo clients: the
              echo rate must stay >= 90 % of A; server RSS per idle
              connection; every slowloris dropped by ``handshake_timeout``.
C. slow       S clients that never read while the server broadcasts
              (``wsnest.broadcast`` and ``ws.send``, alternately) to them and
              to F fast clients: RSS stays bounded by the send high-water
              marks, refusals are code 8, fast clients get every message.
D. faults     client processes SIGKILLed mid-frame and mid-handshake, sockets
              reset with SO_LINGER 0 (RST) mid-frame and mid-handshake, a
              callback raising on every 10th message (1011 for exactly those
              connections); afterwards every connection task is gone.
E. bombs      a 1 GiB declared message (header only) -> 1009 at once;
              100,000 one-byte fragments of one message under the limit
              (delivered) and over it (1009), many connections at once,
              server RSS bounded; on a permessage-deflate route, a
              compressed echo, then ~250 KiB messages that would inflate to
              256 MiB, many at once (1009 each, RSS bounded).
F. shutdown   SIGINT while every flood reader has megabytes of frames queued
              and the idle connections are still open: exit code 0 within a
              bound, on_close == on_open, and each reader got every frame
              queued for it, in order, then the 1001. One more reader keeps
              reading, but too slowly to get everything before the server
              gives up on it: what it gets must still be a clean prefix of
              the queued frames (no close frame inside a torn frame).

G. tls       on HTTPS servers of their own (a fresh self-signed certificate,
              Python ``ssl`` clients): idle TLS connections (handshake done,
              nothing sent; or one request, then nothing) and stalled TLS
              handshakes (nothing sent, a ClientHello less its last byte, a
              60 KB one likewise), all held at once: server RSS per
              connection of each kind, every one dropped by handshake_timeout
              or keepalive_timeout, and an innocent HTTPS client served
              meanwhile. Then never-reading WSS clients asking a feed route
              for far more than send_high_water: dropped, or RSS bounded by
              send_high_water; WSS echo clients alongside keep working.

The server counts on_open / on_close per route, callback errors, refusals
by code and tasks alive; it answers ``GET /stats`` with JSON and prints its
final counters on exit. The run ends with a summary table; a full run writes
the measured numbers into ``docs/reliability.md`` (between markers).

Internals: ``python bench/soak.py _child ROLE JSON`` runs one process role
(server, idle, slowloris, echo, bcast, flood, trickle, killme, fragments,
tlsclients, wssflood); children
talk JSON lines on stdout and take commands on stdin.
"""

from __future__ import annotations

import sys

from soaklib.main import main

if __name__ == "__main__":
    sys.exit(main())
