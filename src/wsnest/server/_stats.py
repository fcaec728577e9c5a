"""Pure functions on the stats dicts of :meth:`HttpServer.stats`: sum
several (one per worker process) and render them in the Prometheus text
exposition format (version 0.0.4)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["PROMETHEUS_CONTENT_TYPE", "merge_stats", "stats_to_prometheus"]

#: The ``Content-Type`` of :func:`stats_to_prometheus` output.
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def merge_stats(stats: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Sum several stats dicts (e.g. one per worker process) into one.

    Numbers are added, nested dicts (``connections``, ``send_refusals``,
    ``ws_closes``) are added key by key; ``pid`` becomes the sorted list
    of every pid, ``workers`` the number of processes merged, and ``core``
    the common core (``"mixed"`` if they differ). A merged dict may be
    merged again.
    """
    total: dict[str, Any] = {}
    pids: list[int] = []
    cores: set[str] = set()
    workers = 0
    for one in stats:
        for key, value in one.items():
            if key == "pid":
                pids.extend(value if isinstance(value, list) else [value])
            elif key == "core":
                cores.add(str(value))
            elif key == "workers":
                continue
            elif isinstance(value, Mapping):
                into = total.setdefault(key, {})
                for sub, n in value.items():
                    into[sub] = into.get(sub, 0) + n
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
        workers += int(one.get("workers", 1))
    total["pid"] = sorted(pids)
    total["core"] = cores.pop() if len(cores) == 1 else ("mixed" if cores else "")
    total["workers"] = workers
    return total


# (key in the stats dict, metric name, type, help, label name of a nested dict's keys)
_METRICS: tuple[tuple[str, str, str, str, str | None], ...] = (
    ("connections", "wsnest_connections", "gauge", "Open connections by kind.", "kind"),
    ("http_requests", "wsnest_http_requests_total", "counter", "HTTP requests served.", None),
    ("ws_sessions", "wsnest_ws_sessions_total", "counter", "WebSocket sessions opened.", None),
    ("streams", "wsnest_streams_total", "counter", "Streamed responses (handler_stream) started.", None),
    ("send_refusals", "wsnest_send_refusals_total", "counter", "send() and broadcast refusals by return code.", "code"),
    ("ws_closes", "wsnest_ws_closes_total", "counter", "WebSocket sessions ended, by close code.", "code"),
    ("groups", "wsnest_groups", "gauge", "Groups with a member here.", None),
    ("group_members", "wsnest_group_members", "gauge", "Group memberships of connections here.", None),
    ("group_publishes", "wsnest_group_publishes_total", "counter", "Messages published to groups here.", None),
    ("group_deliveries", "wsnest_group_deliveries_total", "counter", "Group messages queued to members.", None),
    ("group_malformed", "wsnest_group_malformed_total", "counter", "Broker messages dropped as malformed.", None),
    ("group_duplicates", "wsnest_group_duplicates_total", "counter", "Broker messages dropped as seen.", None),
    ("broker_up", "wsnest_broker_up", "gauge", "Processes whose broker connection is up.", None),
    ("broker_published", "wsnest_broker_published_total", "counter", "Messages published to the broker.", None),
    ("broker_received", "wsnest_broker_received_total", "counter", "Messages received from the broker.", None),
    ("broker_refused", "wsnest_broker_refused_total", "counter", "Publishes the broker refused (down, full).", None),
    ("broker_outages", "wsnest_broker_outages_total", "counter", "Broker connections lost and re-made.", None),
    ("poller_reads", "wsnest_poller_reads_total", "counter", "Reads served inline by the readiness poller.", None),
    ("poller_wakeups", "wsnest_poller_wakeups_total", "counter", "Connection tasks the poller woke.", None),
)
_DIRECTIONS = (
    ("wsnest_ws_messages_total", "WebSocket messages by direction.", "ws_messages_in", "ws_messages_out"),
    (
        "wsnest_ws_bytes_total",
        "WebSocket bytes on the wire (frames) by direction.",
        "ws_bytes_in",
        "ws_bytes_out",
    ),
)


def _label(value: object) -> str:
    # Label values escape backslash, double quote and line feed (format 0.0.4).
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(int(value))


def stats_to_prometheus(stats: Mapping[str, Any]) -> str:
    """Render a stats dict (one server's or :func:`merge_stats`'s) in the
    Prometheus text exposition format 0.0.4 (serve it with
    :data:`PROMETHEUS_CONTENT_TYPE`). Metric names start with ``wsnest_``;
    counters end in ``_total``."""
    lines: list[str] = []

    def head(name: str, kind: str, text: str) -> None:
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")

    pids = stats.get("pid", [])
    pids = pids if isinstance(pids, list) else [pids]
    core = _label(stats.get("core", ""))
    head("wsnest_info", "gauge", "One sample per server process, labelled with its pid and core.")
    for pid in pids:
        lines.append(f'wsnest_info{{core="{core}",pid="{_label(pid)}"}} 1')
    head("wsnest_workers", "gauge", "Server processes whose numbers are included.")
    lines.append(f"wsnest_workers {int(stats.get('workers', 1))}")
    for key, name, kind, text, label in _METRICS:
        if key not in stats:
            continue
        head(name, kind, text)
        value = stats[key]
        if label is None:
            lines.append(f"{name} {_number(value)}")
        else:
            for sub, n in value.items():
                lines.append(f'{name}{{{label}="{_label(sub)}"}} {_number(n)}')
    for name, text, key_in, key_out in _DIRECTIONS:
        if key_in in stats or key_out in stats:
            head(name, "counter", text)
            lines.append(f'{name}{{direction="in"}} {_number(stats.get(key_in, 0))}')
            lines.append(f'{name}{{direction="out"}} {_number(stats.get(key_out, 0))}')
    return "\n".join(lines) + "\n"
