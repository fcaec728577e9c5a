"""A chat with rooms: every message goes to the people in the sender's room.

Run it, then join from two terminals (or a browser's console)::

    python examples/chat_rooms.py            # listens on http://127.0.0.1:8080
    python -m websockets "ws://127.0.0.1:8080/chat?room=lobby&name=ann"

The room and the name come from the query string; ``on_open`` keeps them in
``ws.data`` and refuses an upgrade without a room (400). ``serve`` owns the
connection and pulls its messages; ``wsnest.broadcast`` encodes each line
once for the whole room.
"""

from __future__ import annotations

from urllib.parse import parse_qs

import wsnest


def make_handlers() -> list[wsnest.Handler]:
    """The chat's handler: a WebSocket at ``/chat?room=...&name=...``."""
    rooms: dict[str, dict[int, wsnest.WebSocket]] = {}

    def on_open(ws: wsnest.WebSocket, req: wsnest.Request) -> None:
        query = parse_qs(req.query)
        room = query.get("room", [""])[0]
        if not room:
            raise wsnest.Reject(400, "say which room: /chat?room=NAME")
        ws.data["room"] = room
        ws.data["name"] = query.get("name", [""])[0] or f"guest {ws.id}"
        members = rooms.setdefault(room, {})
        members[ws.id] = ws
        wsnest.broadcast(members.values(), f"* {ws.data['name']} joined {room}")

    async def serve(ws: wsnest.WebSocket) -> None:
        members = rooms[ws.data["room"]]
        async for text in ws:  # ends when the client closes
            assert isinstance(text, str)  # textframes=True: every message is text
            wsnest.broadcast(members.values(), f"{ws.data['name']}: {text}")

    def on_close(ws: wsnest.WebSocket) -> None:
        if "room" not in ws.data:
            return
        room = ws.data["room"]
        members = rooms[room]
        members.pop(ws.id, None)
        if members:
            wsnest.broadcast(members.values(), f"* {ws.data['name']} left")
        else:
            del rooms[room]  # the last one out: forget the room

    return [wsnest.handler_ws("/chat", serve=serve, on_open=on_open, on_close=on_close, textframes=True)]


if __name__ == "__main__":
    wsnest.http_server("http://127.0.0.1:8080", make_handlers()).run()
