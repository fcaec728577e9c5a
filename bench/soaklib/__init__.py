"""The soak run behind ``python bench/soak.py``, split by concern.

- ``common``: constants, /proc probes, the children's I/O.
- ``server_child``: the wsnest server under test.
- ``clients`` / ``tls_clients``: the client children (plain TCP / TLS).
- ``roles``: every child role by name.
- ``procs``: the parent's handle on a child process, an RSS sampler.
- ``base``: the run's state and plumbing.
- ``phase_load`` (A-C), ``phase_faults`` (D-E), ``phase_shutdown`` (F), ``phase_tls`` (G).
- ``report``: checks, summary tables, ``docs/reliability.md``.
- ``main``: options and the phases in order.

The client side of the wire (frames, masking, handshakes) is ``bench/wire.py``,
shared with the tests.
"""
