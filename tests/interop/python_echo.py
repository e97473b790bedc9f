#!/usr/bin/env python3
"""Interop check: a real third-party client (Python `websockets`) against an echo endpoint.

    python3 tests/interop/python_echo.py --url ws://127.0.0.1:8080/echo
    python3 tests/interop/python_echo.py --url wss://localhost:8443/echo --cafile certs/dev-ca.pem

Run it against wsgate's built-in echo route (`echo: true`) or any RFC 6455 echo
server. Each check runs on its own connection, so one failure cannot hide the
others. Prints a table (check, result, detail) and exits 0 only if every check
passed (1 if any failed, 2 on bad arguments).

Needs `websockets` >= 13 (the asyncio client API): pip install 'websockets>=13,<16'.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import ssl
import sys
import time
from collections.abc import Awaitable, Callable

try:
    import websockets
    from websockets.asyncio.client import ClientConnection, connect
except ImportError as exc:  # pragma: no cover - environment problem, say so loudly
    print(
        f"error: Python websockets >= 13 is required ({exc}); "
        "install it with: python3 -m pip install 'websockets>=13,<16'",
        file=sys.stderr,
    )
    sys.exit(2)

# Sizes around the frame-length encoding boundaries of RFC 6455 section 5.2:
# 7-bit length up to 125, 16-bit from 126 to 65535, 64-bit from 65536; plus 1 MiB.
SIZES = [0, 1, 125, 126, 65535, 65536, 1 << 20]
IN_ORDER_COUNT = 100
# Largest message the client accepts; above the largest one we send (3 MiB).
MAX_MESSAGE_BYTES = 16 << 20
CHECK_TIMEOUT_S = 10.0
CLOSE_CODE = 4000
CLOSE_REASON = "bye"


def payload(size: int, binary: bool, seed: int = 0) -> str | bytes:
    """A deterministic payload of exactly `size` bytes (ASCII text or arbitrary bytes)."""
    if binary:
        # All 256 byte values, so masking/unmasking bugs cannot hide in zeros.
        return bytes((i * 7 + seed) % 256 for i in range(size))
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 "
    return "".join(alphabet[(i + seed) % len(alphabet)] for i in range(size))


def describe(msg: str | bytes) -> str:
    kind = "bytes" if isinstance(msg, bytes) else "str"
    size = len(msg) if isinstance(msg, bytes) else len(msg.encode())
    return f"{kind}[{size}B]"


class Failed(Exception):
    """A check's expectation was not met."""


def expect_equal(got: str | bytes, want: str | bytes) -> None:
    if type(got) is not type(want):
        raise Failed(f"got {describe(got)}, sent {describe(want)} (wrong message type)")
    if got != want:
        first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        raise Failed(f"got {describe(got)}, sent {describe(want)}, first difference at index {first}")


async def echo_one(ws: ClientConnection, msg: str | bytes) -> str:
    await ws.send(msg)
    expect_equal(await ws.recv(), msg)
    return describe(msg)


def check_echo(size: int, binary: bool) -> Callable[[ClientConnection], Awaitable[str]]:
    return lambda ws: echo_one(ws, payload(size, binary))


async def check_utf8(ws: ClientConnection) -> str:
    # Multi-byte UTF-8: 2-, 3- and 4-byte sequences.
    return await echo_one(ws, "héllo wörld ✓ — 🚀 " * 100)


async def check_in_order(ws: ClientConnection) -> str:
    sent = [f"message {i:03d} " + payload(i * 10, False, seed=i) for i in range(IN_ORDER_COUNT)]
    for msg in sent:  # all sent before any is read: several messages in flight
        await ws.send(msg)
    for i, want in enumerate(sent):
        got = await ws.recv()
        if got != want:
            raise Failed(f"message {i}: got {describe(got)} {str(got)[:12]!r}, want {want[:12]!r}")
    return f"{IN_ORDER_COUNT} text messages, same order"


async def check_fragmented_text(ws: ClientConnection) -> str:
    fragments = ["Hello, ", "fragmented ", "wörld ✓", ""]
    await ws.send(fragments)  # an iterable: one frame per item, one message
    expect_equal(await ws.recv(), "".join(fragments))
    return f"{len(fragments)} frames -> 1 message"


async def check_fragmented_binary(ws: ClientConnection) -> str:
    fragments = [payload(1 << 20, True, seed=i) for i in range(3)]
    await ws.send(fragments)
    expect_equal(await ws.recv(), b"".join(fragments))
    return "3 x 1 MiB frames -> 1 message"


async def check_ping(ws: ClientConnection) -> str:
    pong = await ws.ping(b"interop-ping")
    latency = await pong  # resolves when the matching Pong arrives
    # The connection still carries data after the ping.
    await echo_one(ws, "after ping")
    return f"pong in {latency * 1000:.1f} ms"


async def check_close(ws: ClientConnection) -> str:
    await echo_one(ws, "before close")
    await ws.close(CLOSE_CODE, CLOSE_REASON)
    # close() returns once the closing handshake and the TCP close are done.
    code, reason = ws.close_code, ws.close_reason  # what the server sent back
    if code != CLOSE_CODE or reason != CLOSE_REASON:
        raise Failed(f"server closed with {code} {reason!r}, want {CLOSE_CODE} {CLOSE_REASON!r}")
    return f"sent and received {CLOSE_CODE} {CLOSE_REASON!r}"


def build_checks() -> list[tuple[str, Callable[[ClientConnection], Awaitable[str]]]]:
    checks: list[tuple[str, Callable[[ClientConnection], Awaitable[str]]]] = []
    for binary in (False, True):
        for size in SIZES:
            checks.append((f"{'binary' if binary else 'text'} echo {size} B", check_echo(size, binary)))
    checks += [
        ("text echo multi-byte UTF-8", check_utf8),
        (f"{IN_ORDER_COUNT} messages in order", check_in_order),
        ("fragmented text send", check_fragmented_text),
        ("fragmented binary send", check_fragmented_binary),
        ("ping -> pong", check_ping),
        (f"close {CLOSE_CODE} {CLOSE_REASON!r} echoed", check_close),
    ]
    return checks


def ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.url.startswith("wss://"):
        return None
    if args.insecure:
        # Only for a listener with a throw-away self-signed certificate (nothing to
        # verify against). Never use it for a certificate you can trust: --cafile.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=args.cafile)  # cafile=None: system trust store


def connect_kwargs(ctx: ssl.SSLContext | None) -> dict:
    kwargs: dict = {
        "max_size": MAX_MESSAGE_BYTES,
        "open_timeout": 10,
        "close_timeout": 5,
    }
    if ctx is not None:
        kwargs["ssl"] = ctx
    # websockets >= 15 honours HTTP(S)_PROXY by default; always talk to the URL itself.
    if "proxy" in inspect.signature(connect.__init__).parameters:
        kwargs["proxy"] = None
    return kwargs


async def run_check(url: str, kwargs: dict, check: Callable[[ClientConnection], Awaitable[str]]) -> str:
    async with connect(url, **kwargs) as ws:
        return await check(ws)


async def main_async(args: argparse.Namespace) -> int:
    kwargs = connect_kwargs(ssl_context(args))
    print(f"url: {args.url}")
    print(f"client: Python {sys.version.split()[0]}, websockets {websockets.__version__}")

    # Handshake first: if it fails, every other check would fail the same way.
    try:
        async with connect(args.url, **kwargs) as ws:
            extensions = ws.response.headers.get("Sec-WebSocket-Extensions") or "none"
            subprotocol = ws.subprotocol or "none"
            tls = ws.transport.get_extra_info("ssl_object")
            tls_version = tls.version() if tls is not None else "no TLS"
            print(
                f"handshake: status {ws.response.status_code}, {tls_version}, "
                f"extensions: {extensions}, subprotocol: {subprotocol}"
            )
    except Exception as exc:  # noqa: BLE001 - report any failure, whatever its type
        print(f"error: cannot open {args.url}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1

    results: list[tuple[str, bool, str]] = []
    for name, check in build_checks():
        start = time.monotonic()
        try:
            detail = await asyncio.wait_for(run_check(args.url, kwargs, check), CHECK_TIMEOUT_S)
            ok = True
        except asyncio.TimeoutError:
            ok, detail = False, f"timed out after {CHECK_TIMEOUT_S:.0f} s"
        except Failed as exc:
            ok, detail = False, str(exc)
        except Exception as exc:  # noqa: BLE001 - a crash of one check is its failure
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        elapsed_ms = (time.monotonic() - start) * 1000
        results.append((name, ok, f"{detail} ({elapsed_ms:.0f} ms)"))

    width = max(len(name) for name, _, _ in results)
    print()
    print(f"{'check':<{width}}  result  detail")
    print(f"{'-' * width}  ------  ------")
    for name, ok, detail in results:
        print(f"{name:<{width}}  {'ok' if ok else 'FAIL':<6}  {detail}")
    failed = sum(1 for _, ok, _ in results if not ok)
    print()
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="ws:// or wss:// URL of an echo endpoint")
    parser.add_argument("--cafile", help="PEM file of CA certificates to trust for wss://")
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="wss:// without certificate verification; only for a self-signed test listener",
    )
    args = parser.parse_args(argv)
    if not args.url.startswith(("ws://", "wss://")):
        parser.error("--url must start with ws:// or wss://")
    if args.url.startswith("ws://") and (args.cafile or args.insecure):
        parser.error("--cafile and --insecure only apply to wss:// URLs")
    if args.cafile and args.insecure:
        parser.error("--cafile and --insecure are exclusive")
    if args.cafile and not os.path.isfile(args.cafile):
        parser.error(f"--cafile {args.cafile}: no such file")
    return args


def main() -> int:
    return asyncio.run(main_async(parse_args(sys.argv[1:])))


if __name__ == "__main__":
    sys.exit(main())
