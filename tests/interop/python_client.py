#!/usr/bin/env python3
"""Third-party client interop: Python `websockets` through wsgate to ws_backend.py.

    python3 tests/interop/python_client.py --url ws://WSGATE --direct ws://BACKEND

Expects wsgate to route `/` to ws_backend.py unchanged (echo, fragments, subprotocol,
close, record, report) and `/raw` to the backend's `/echo` with `validate_utf8: false`
(tests/interop/clients.sh sets this up). `--direct` is the backend itself, used once to
learn the backend's own answer to invalid UTF-8. Every check runs on its own
connection(s) with its own timeout; prints a table (check, result, detail) and exits 0
only if every check passed (1 if any failed, 2 on bad arguments or a missing library).

Needs `websockets` >= 14 (send(..., text=True)).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from urllib.parse import quote

try:
    import websockets
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed
except ImportError as exc:  # pragma: no cover - environment problem, say so loudly
    print(f"error: Python websockets >= 14 is required ({exc})", file=sys.stderr)
    sys.exit(2)

MiB = 1 << 20
# Every frame-length class of RFC 6455 5.2 (7-bit, 16-bit, 64-bit) up to wsgate's default
# max_frame_bytes, which a frame of exactly that size must pass.
SIZES = [0, 1, 125, 126, 65535, 65536, MiB, 16 * MiB]
TEXT_SIZES = [0, 126, 65536, 16 * MiB]
CLOSE_CODES = [1000, 1001, 3000, 4999]
CONCURRENT = 300
CHECK_TIMEOUT_S = 30.0
# A reason of exactly 123 bytes: the most a Close frame can carry (125 - 2).
LONG_REASON = ("ünïcödé reason " * 10).encode()[:123].decode(errors="ignore")
INVALID_UTF8 = b"\xff\xfe invalid"


def payload(size: int, text: bool, seed: int = 0) -> str | bytes:
    if text:
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 "
        return "".join(alphabet[(i + seed) % len(alphabet)] for i in range(size))
    return bytes((i * 7 + seed) % 256 for i in range(size))


def fast_payload(size: int, text: bool) -> str | bytes:
    """Large payloads built by repetition (a per-byte loop over 16 MiB is slow)."""
    unit = payload(4096, text, seed=size % 251)
    reps = size // 4096 + 1
    return (unit * reps)[:size]


def connect_to(url: str, **kwargs):
    return connect(
        url, max_size=64 * MiB, compression=None, ping_interval=None, open_timeout=10, **kwargs
    )


async def check_echo(base: str) -> str:
    done = []
    async with connect_to(f"{base}/echo/sizes") as ws:
        for text in (False, True):
            for size in TEXT_SIZES if text else SIZES:
                msg = fast_payload(size, text)
                await ws.send(msg)
                got = await ws.recv()
                if got != msg:
                    kind = "text" if text else "binary"
                    return f"FAILED {kind} {size} B: got {type(got).__name__} of {len(got)}"
                done.append(size)
    return f"ok: binary {len(SIZES)} sizes, text {len(TEXT_SIZES)} sizes, 0 B..16 MiB"


async def check_fragments(base: str) -> str:
    results = []
    # (kind, fragments): text split inside a multi-byte character, binary with an
    # empty middle fragment and a 64 KiB one.
    snowman = "☃".encode()  # 3 bytes
    cases = [
        ("text", [b"ab" + snowman[:1], snowman[1:] + b"cd", b"\xce", b"\xba end"]),
        ("binary", [payload(1000, False), b"", payload(65536, False, 1), b"\x00"]),
    ]
    async with connect_to(f"{base}/fragments/py") as ws:
        for kind, chunks in cases:
            await ws.send(chunks, text=(kind == "text"))
            frames = []
            async for frame in ws.recv_streaming(decode=False):
                frames.append(frame)
            report = json.loads(await ws.recv())
            sent_sizes = [len(c) for c in chunks] + [0]  # the library's empty final frame
            whole = b"".join(chunks)
            if report["received"] != sent_sizes:
                return f"FAILED {kind}: backend got frames {report['received']}, sent {sent_sizes}"
            if report["type"] != kind.upper():
                return f"FAILED {kind}: backend saw type {report['type']}"
            if [len(f) for f in frames] != report["sent"]:
                return f"FAILED {kind}: got frames {[len(f) for f in frames]}, backend sent {report['sent']}"
            if b"".join(frames) != whole:
                return f"FAILED {kind}: reassembled echo differs"
            results.append(f"{kind} {sent_sizes}")
    return "ok: frames kept both ways: " + "; ".join(results)


async def check_subprotocol(base: str) -> str:
    offered = ["v1.wsgate.test", "v2.wsgate.test"]
    async with connect_to(f"{base}/subprotocol?supported=v2.wsgate.test", subprotocols=offered) as ws:
        hello = json.loads(await ws.recv())
        if ws.subprotocol != "v2.wsgate.test" or hello["subprotocol"] != "v2.wsgate.test":
            return f"FAILED: client sees {ws.subprotocol!r}, backend chose {hello['subprotocol']!r}"
    async with connect_to(f"{base}/subprotocol?supported=none", subprotocols=offered) as ws:
        hello = json.loads(await ws.recv())
        if ws.subprotocol is not None or hello["subprotocol"] is not None:
            return f"FAILED (none supported): client {ws.subprotocol!r}, backend {hello['subprotocol']!r}"
    return "ok: offered v1,v2 -> v2 both sides; unsupported -> none"


async def backend_record(base: str, token: str) -> dict:
    async with connect_to(f"{base}/report/{token}") as ws:
        return json.loads(await ws.recv())


async def check_close_client(base: str) -> str:
    seen = []
    for code in CLOSE_CODES:
        for reason in (f"client bye {code}", LONG_REASON):
            token = uuid.uuid4().hex
            async with connect_to(f"{base}/record/{token}") as ws:
                await ws.send("x")
                await ws.recv()
                await ws.close(code, reason)
                reply = ws.protocol.close_rcvd
            record = await backend_record(base, token)
            if (record.get("code"), record.get("reason")) != (code, reason):
                return f"FAILED {code}: backend got {record.get('code')} {record.get('reason')!r}"
            if reply is None or (reply.code, reply.reason) != (code, reason):
                return f"FAILED {code}: close reply {reply}"
            seen.append(code)
    return f"ok: {sorted(set(seen))} + reasons (incl. 123-byte UTF-8) reach the backend"


async def check_close_backend(base: str) -> str:
    seen = []
    for code in CLOSE_CODES:
        for reason in (f"backend bye {code}", LONG_REASON):
            async with connect_to(f"{base}/close?code={code}&reason={quote(reason)}") as ws:
                try:
                    await ws.recv()
                    return f"FAILED {code}: got a message instead of a close"
                except ConnectionClosed as exc:
                    rcvd = exc.rcvd
            if rcvd is None or (rcvd.code, rcvd.reason) != (code, reason):
                return f"FAILED {code}: client got {rcvd}"
            seen.append(code)
    return f"ok: {sorted(set(seen))} + reasons reach the client"


async def close_after_invalid_utf8(url: str, fragments: list[bytes] | None = None):
    async with connect_to(url) as ws:
        if fragments:
            await ws.send(fragments, text=True)
        else:
            await ws.send(INVALID_UTF8, text=True)
        try:
            await ws.recv()
            return None
        except ConnectionClosed as exc:
            return exc.rcvd


async def check_utf8(base: str, direct: str) -> str:
    own = await close_after_invalid_utf8(f"{direct}/echo/utf8")
    through = await close_after_invalid_utf8(f"{base}/raw/utf8")
    if own is None or own.code != 1007:
        return f"FAILED: the backend itself answered {own}"
    if through is None or (through.code, through.reason) != (own.code, own.reason):
        return f"FAILED: validate_utf8 off: got {through}, backend says {own}"
    by_gate = await close_after_invalid_utf8(f"{base}/echo/utf8")
    if by_gate is None or by_gate.code != 1007:
        return f"FAILED: default route answered {by_gate}"
    # Invalid only across fragments: a truncated 2-byte sequence at the message end.
    split = await close_after_invalid_utf8(f"{base}/echo/utf8", [b"valid ", b"\xce"])
    if split is None or split.code != 1007:
        return f"FAILED: truncated sequence across fragments: {split}"
    return (
        f"ok: backend 1007 {own.reason!r} passes intact; "
        f"wsgate 1007 {by_gate.reason!r} (also across fragments)"
    )


async def check_concurrent(base: str) -> str:
    started = time.monotonic()
    barrier = asyncio.Event()
    opened = 0
    echoed = 0

    async def one(i: int) -> None:
        nonlocal opened, echoed
        async with connect_to(f"{base}/echo/c{i}") as ws:
            opened += 1
            if opened == CONCURRENT:
                barrier.set()
            await ws.send(f"conn {i}")
            if await ws.recv() == f"conn {i}":
                echoed += 1
            # Keep every connection open until all are: 300 at once through wsgate.
            await barrier.wait()
            await ws.send(f"again {i}")
            if await ws.recv() != f"again {i}":
                raise AssertionError(f"conn {i}: second echo differs")

    results = await asyncio.gather(*(one(i) for i in range(CONCURRENT)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    elapsed = time.monotonic() - started
    if errors or echoed != CONCURRENT:
        return f"FAILED: opened {opened}, echoed {echoed}, {len(errors)} errors, first: {errors[:1]}"
    return f"ok: {CONCURRENT} open at once, all echoed twice, closed 1000 ({elapsed:.1f}s)"


async def run(args) -> int:
    base, direct = args.url.rstrip("/"), args.direct.rstrip("/")
    checks = [
        ("echo 0 B..16 MiB", lambda: check_echo(base)),
        ("fragmented sends", lambda: check_fragments(base)),
        ("subprotocol", lambda: check_subprotocol(base)),
        ("close from client", lambda: check_close_client(base)),
        ("close from backend", lambda: check_close_backend(base)),
        ("invalid UTF-8 -> 1007", lambda: check_utf8(base, direct)),
        (f"{CONCURRENT} concurrent", lambda: check_concurrent(base)),
    ]
    print(f"client: Python websockets {websockets.__version__}; wsgate {base}; backend {direct}")
    rows = []
    for name, check in checks:
        started = time.monotonic()
        try:
            detail = await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
        except Exception as exc:  # one failing check must not hide the others
            detail = f"FAILED: {type(exc).__name__}: {exc}"
        rows.append((name, detail, time.monotonic() - started))
    width = max(len(r[0]) for r in rows)
    print(f"\n{'check':<{width}}  result  {'s':>5}  detail")
    failed = 0
    for name, detail, secs in rows:
        ok = detail.startswith("ok")
        failed += not ok
        print(f"{name:<{width}}  {'ok' if ok else 'FAILED':<6}  {secs:5.1f}  {detail.removeprefix('ok: ')}")
    print(f"\n{len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="wsgate base URL, e.g. ws://127.0.0.1:8080")
    parser.add_argument("--direct", required=True, help="backend base URL (ws_backend.py)")
    args = parser.parse_args()
    major, minor = (int(x) for x in websockets.__version__.split(".")[:2])
    if (major, minor) < (14, 0):
        print(f"error: websockets >= 14 required, found {websockets.__version__}", file=sys.stderr)
        return 2
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
