#!/usr/bin/env python3
"""WebSocket clients for tests/container/run.sh, run on the host against published ports.

    clients.py echo URL                     one text and one binary message echoed
    clients.py hold --ready FILE URL...     one client per URL (ws:// or wss://) that waits
        for the server's Close and answers it, plus, per `--silent HOST:PORT`, a raw client
        that completes the upgrade and then never reads or answers; FILE is written once
        every client is connected; prints one JSON line: the close code each client got
        and when its connection ended

wss:// is verified against nothing (the image's default certificate is self-signed).
Exit status: 0 when everything asked for happened, 1 otherwise, 2 on a missing library.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import ssl
import struct
import sys
import time

try:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed
except ImportError as exc:  # pragma: no cover - environment problem, say so loudly
    print(f"error: Python websockets >= 14 is required ({exc})", file=sys.stderr)
    sys.exit(2)

TIMEOUT = 10.0
# Longest a held client waits for the server's Close: above the default drain_timeout.
HOLD_LIMIT = 45.0


def tls_for(url: str) -> ssl.SSLContext | None:
    if not url.startswith("wss://"):
        return None
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def echo(url: str) -> int:
    async with asyncio.timeout(TIMEOUT):
        async with connect(url, ssl=tls_for(url), open_timeout=TIMEOUT) as ws:
            await ws.send("hello through the container")
            text = await ws.recv()
            await ws.send(b"\x00\x01\x02" * 1000)
            data = await ws.recv()
    ok = text == "hello through the container" and data == b"\x00\x01\x02" * 1000
    print(f"echo {url}: {'ok' if ok else 'MISMATCH'}")
    return 0 if ok else 1


async def held(url: str, ready: asyncio.Event, result: dict) -> None:
    async with connect(url, ssl=tls_for(url), open_timeout=TIMEOUT) as ws:
        ready.set()
        try:
            async with asyncio.timeout(HOLD_LIMIT):
                while True:
                    await ws.recv()
        except ConnectionClosed as e:
            result["code"] = e.rcvd.code if e.rcvd else None
        result["ended"] = time.monotonic()


async def silent(hostport: str, ready: asyncio.Event, result: dict) -> None:
    """Upgrades, then reads only to see the Close arrive and the connection end; never answers."""
    host, port = hostport.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /echo HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"silent client not upgraded: {head[:40]!r}")
    ready.set()
    buf = b""
    async with asyncio.timeout(HOLD_LIMIT):
        while True:
            chunk = await reader.read(4096)
            if not chunk:
                break
            buf += chunk
    result["ended"] = time.monotonic()
    # An unmasked server frame: FIN|opcode, then a 7-bit length (a Close is at most 125).
    if len(buf) >= 4 and buf[0] == 0x88 and buf[1] >= 2:
        result["code"] = struct.unpack("!H", buf[2:4])[0]
    writer.close()


async def hold(urls: list[str], silents: list[str], ready_file: str) -> int:
    tasks, readies, results, names = [], [], [], []
    for url in urls:
        ev, res = asyncio.Event(), {}
        tasks.append(asyncio.create_task(held(url, ev, res)))
        readies.append(ev), results.append(res), names.append(url)
    for hp in silents:
        ev, res = asyncio.Event(), {}
        tasks.append(asyncio.create_task(silent(hp, ev, res)))
        readies.append(ev), results.append(res), names.append(f"silent {hp}")
    # Bounded: every client connected, or one failed, within TIMEOUT.
    async with asyncio.timeout(TIMEOUT):
        while not all(ev.is_set() for ev in readies):
            failed = [t for t in tasks if t.done() and t.exception()]
            if failed:
                raise failed[0].exception()
            await asyncio.sleep(0.05)
    with open(ready_file, "w") as f:
        f.write(str(time.monotonic()))
    start = time.monotonic()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    report = []
    for name, res, out in zip(names, results, outcomes):
        report.append(
            {
                "client": name,
                "code": res.get("code"),
                "ended_after_s": round(res["ended"] - start, 2) if "ended" in res else None,
                "error": None if out is None else repr(out),
            }
        )
    print(json.dumps(report))
    return 0 if all(r["code"] == 1001 and r["error"] is None for r in report) else 1


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("echo")
    e.add_argument("url")
    h = sub.add_parser("hold")
    h.add_argument("--ready", required=True)
    h.add_argument("--silent", action="append", default=[])
    h.add_argument("urls", nargs="*")
    args = parser.parse_args()
    if args.cmd == "echo":
        return asyncio.run(echo(args.url))
    return asyncio.run(hold(args.urls, args.silent, args.ready))


if __name__ == "__main__":
    sys.exit(main())
