#!/usr/bin/env python3
"""A third-party WebSocket backend for the interop suites: Python `websockets`.

    python3 tests/interop/ws_backend.py [--port 0]

Prints `listening 127.0.0.1:PORT` on stdout once it accepts connections, then serves
until SIGTERM/SIGINT. Compression is off (wsgate strips extensions), there is no size
limit (clients send 16 MiB messages) and no keepalive ping of its own. What a
connection does is chosen by its path, so one backend serves every interop suite:

  /echo...                  echo every message as received (text stays text): nothing
                            but the library's own handling (autobahn.sh uses it with
                            AUTOBAHN_BACKEND=python).
  /fragments...             for each message, send it back cut at the same offsets as
                            the frames it arrived in, then a text report
                            `{"type": "TEXT"|"BINARY", "received": [frame sizes],
                            "sent": [frame sizes]}`. The library ends every fragmented
                            send with an empty final frame, so `sent` ends with 0.
  /subprotocol...           the subprotocol is chosen by select_subprotocol below: the
                            first offered one of `?supported=a,b` (default
                            `v2.wsgate.test`); sends `{"subprotocol": ...}`, then echoes.
  /close?code=N&reason=R    close with code N and reason R right after the handshake.
  /pingpong?count=N         app-level keepalive: send the text `ping` N times, each
                            answered by `pong` within 5 s, then `{"pongs": N}` and close
                            1000. A wrong answer closes with 4400.
  /record/TOKEN             echo, and when the connection ends record the close code
                            and reason the client sent (and a few request headers).
  /report/TOKEN             wait up to 5 s for the record of TOKEN, send it as JSON
                            text, close 1000. Suites connect here directly, not through
                            wsgate, to learn what the backend saw.
  anything else             HTTP 404.

Needs `websockets` >= 14 (send(..., text=True) is used by the clients; the asyncio
server API): pip install 'websockets>=14,<16'.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

try:
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed
    from websockets.frames import Frame, Opcode
except ImportError as exc:  # pragma: no cover - environment problem, say so loudly
    print(
        f"error: Python websockets >= 14 is required ({exc}); "
        "install it with: python3 -m pip install 'websockets>=14,<16'",
        file=sys.stderr,
    )
    sys.exit(2)

DEFAULT_SUBPROTOCOL = "v2.wsgate.test"
PONG_TIMEOUT_S = 5.0
REPORT_WAIT_S = 5.0
# Request headers copied into a /record report (what wsgate adds or passes on).
RECORDED_HEADERS = (
    "origin",
    "x-forwarded-proto",
    "x-forwarded-for",
    "user-agent",
    # The JWT route: its claim header, and the offer the backend saw (the token taken out).
    "x-auth-sub",
    "sec-websocket-protocol",
)

# TOKEN -> record, filled by /record connections when they end.
records: dict[str, dict] = {}
record_events: dict[str, asyncio.Event] = {}


def route_of(ws: ServerConnection) -> tuple[str, list[str], dict[str, list[str]]]:
    """(first path segment, remaining segments, query) of the request."""
    url = urlsplit(ws.request.path)
    segments = [s for s in url.path.split("/") if s]
    first = segments[0] if segments else ""
    return first, segments[1:], parse_qs(url.query)


def event_for(token: str) -> asyncio.Event:
    return record_events.setdefault(token, asyncio.Event())


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


class FrameLog(ServerConnection):
    """A connection that also notes the data frames it receives (type, size)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.data_frames: list[tuple[str, int]] = []

    def process_event(self, event) -> None:
        if isinstance(event, Frame) and event.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            self.data_frames.append((event.opcode.name, len(event.data)))
        super().process_event(event)


async def fragments(ws: FrameLog) -> None:
    async for message in ws:
        frames, ws.data_frames = ws.data_frames, []
        data = message.encode() if isinstance(message, str) else message
        received = [size for _, size in frames]
        # The library appends an empty final frame itself: leave a trailing 0 to it.
        cuts = received[:-1] if received and received[-1] == 0 else received
        chunks, at = [], 0
        for size in cuts:
            chunks.append(data[at : at + size])
            at += size
        if chunks:
            await ws.send(chunks, text=isinstance(message, str))
            sent = [len(c) for c in chunks] + [0]
        else:  # one empty frame: nothing to cut
            await ws.send(message)
            sent = [0]
        report = {"type": frames[0][0] if frames else None, "received": received, "sent": sent}
        await ws.send(json.dumps(report))


async def subprotocol(ws: ServerConnection) -> None:
    await ws.send(json.dumps({"subprotocol": ws.subprotocol}))
    await echo(ws)


async def close_with(ws: ServerConnection, query: dict[str, list[str]]) -> None:
    code = int(query.get("code", ["1000"])[0])
    reason = query.get("reason", [""])[0]
    await ws.close(code, reason)


async def pingpong(ws: ServerConnection, query: dict[str, list[str]]) -> None:
    count = int(query.get("count", ["3"])[0])
    for i in range(count):
        await ws.send("ping")
        try:
            answer = await asyncio.wait_for(ws.recv(), PONG_TIMEOUT_S)
        except asyncio.TimeoutError:
            await ws.close(4408, f"no pong {i + 1} within {PONG_TIMEOUT_S}s")
            return
        if answer != "pong":
            await ws.close(4400, f"expected pong, got {answer!r}"[:120])
            return
    await ws.send(json.dumps({"pongs": count}))
    await ws.close(1000, "pingpong done")


async def record(ws: ServerConnection, token: str) -> None:
    messages = 0
    try:
        async for _ in ws:
            messages += 1
            await ws.send(_)
    except ConnectionClosed:
        pass
    rcvd = ws.protocol.close_rcvd
    records[token] = {
        "token": token,
        "code": rcvd.code if rcvd else None,
        "reason": rcvd.reason if rcvd else None,
        "messages": messages,
        "headers": {h: ws.request.headers.get(h) for h in RECORDED_HEADERS},
    }
    event_for(token).set()


async def report(ws: ServerConnection, token: str) -> None:
    try:
        await asyncio.wait_for(event_for(token).wait(), REPORT_WAIT_S)
        body = records[token]
    except asyncio.TimeoutError:
        body = {"token": token, "error": f"no record within {REPORT_WAIT_S}s"}
    await ws.send(json.dumps(body))
    await ws.close(1000)


async def handler(ws: ServerConnection) -> None:
    first, rest, query = route_of(ws)
    try:
        if first == "echo":
            await echo(ws)
        elif first == "fragments":
            await fragments(ws)
        elif first == "subprotocol":
            await subprotocol(ws)
        elif first == "close":
            await close_with(ws, query)
        elif first == "pingpong":
            await pingpong(ws, query)
        elif first == "record" and rest:
            await record(ws, rest[0])
        elif first == "report" and rest:
            await report(ws, rest[0])
    except ConnectionClosed:
        pass


KNOWN_ROUTES = {"echo", "fragments", "subprotocol", "close", "pingpong", "record", "report"}


def process_request(ws: ServerConnection, request):
    path = urlsplit(request.path).path
    segments = [s for s in path.split("/") if s]
    if not segments or segments[0] not in KNOWN_ROUTES:
        return ws.respond(HTTPStatus.NOT_FOUND, f"no such route: {path}\n")
    return None


def select_subprotocol(ws: ServerConnection, offered):
    """Only /subprotocol negotiates: the first offered protocol it supports."""
    first, _, query = route_of(ws)
    if first != "subprotocol":
        return None
    supported = ",".join(query.get("supported", [DEFAULT_SUBPROTOCOL])).split(",")
    for protocol in offered:
        if protocol in supported:
            return protocol
    return None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)

    async with serve(
        handler,
        args.host,
        args.port,
        process_request=process_request,
        select_subprotocol=select_subprotocol,
        compression=None,
        max_size=None,
        ping_interval=None,
        close_timeout=5,
        create_connection=FrameLog,
    ) as server:
        host, port = server.sockets[0].getsockname()[:2]
        print(f"listening {host}:{port}", flush=True)
        await stop


if __name__ == "__main__":
    asyncio.run(main())
