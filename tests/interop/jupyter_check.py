"""Jupyter Server through wsgate: the browser's login flow, a kernel, `1+1` on its channels.

    python3 tests/interop/jupyter_check.py --url http://WSGATE --token TOKEN \
        --plain-host http://WSGATE2

Started by tests/interop/jupyter.sh. --url is a wsgate route with `preserve_host: true`
in front of Jupyter Server; --plain-host (optional) is one without it, over the same
server, checked for what Jupyter does then. Every request carries the `Origin` a browser
on that page would send. Prints a table (check, result, detail); exits 0 only if every
check passed. Needs `websockets` >= 14 (the HTTP side is the standard library).
"""

import argparse
import asyncio
import datetime
import http.client
import json
import sys
import urllib.parse
import uuid
from http.cookies import SimpleCookie

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

STEP_S = 30  # a kernel start under load can take several seconds
EXECUTE_S = 30


class Browser:
    """Cookies and the XSRF token of one origin, over http.client (one connection each)."""

    def __init__(self, base: str):
        self.base = base.rstrip("/")
        self.netloc = urllib.parse.urlsplit(self.base).netloc
        self.cookies: dict[str, str] = {}

    def cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())

    def request(self, method: str, path: str, body: bytes | None = None, headers=None):
        host, port = self.netloc.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=STEP_S)
        h = {"Origin": self.base, "Cookie": self.cookie_header()}
        if "_xsrf" in self.cookies:
            h["X-XSRFToken"] = self.cookies["_xsrf"]
        h.update(headers or {})
        h = {k: v for k, v in h.items() if v is not None}  # None: leave the header out
        try:
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        for value in resp.headers.get_all("Set-Cookie") or []:
            jar = SimpleCookie()
            jar.load(value)
            for k, morsel in jar.items():
                self.cookies[k] = morsel.value
        return resp.status, resp.headers, data

    def ws_url(self, path: str) -> str:
        return "ws://" + self.netloc + path


def execute_request(session: str, code: str) -> dict:
    """A Jupyter message protocol (v5.3) execute_request on the shell channel."""
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "username": "interop",
            "session": session,
            "msg_type": "execute_request",
            "version": "5.3",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        },
        "parent_header": {},
        "metadata": {},
        "content": {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        "channel": "shell",
        "buffers": [],
    }


async def execute(browser: Browser, kernel_id: str, code: str) -> tuple[str, str, list[str]]:
    """Run `code` on the kernel's channels WebSocket: (text/plain result, reply status, msg types)."""
    session = uuid.uuid4().hex
    url = browser.ws_url(f"/api/kernels/{kernel_id}/channels?session_id={session}")
    headers = {"Cookie": browser.cookie_header()}
    async with connect(url, origin=browser.base, additional_headers=headers, open_timeout=STEP_S,
                       max_size=None) as ws:
        msg = execute_request(session, code)
        await ws.send(json.dumps(msg))
        result, status, seen = None, None, []
        async with asyncio.timeout(EXECUTE_S):
            while result is None or status is None:
                m = json.loads(await ws.recv())
                if m.get("parent_header", {}).get("msg_id") != msg["header"]["msg_id"]:
                    continue
                kind = m["header"]["msg_type"]
                seen.append(f"{m.get('channel')}:{kind}")
                if kind == "execute_result":
                    result = m["content"]["data"].get("text/plain")
                elif kind == "execute_reply":
                    status = m["content"]["status"]
                elif kind == "error":
                    result = "error: " + m["content"].get("evalue", "")
    return result, status, seen


class Table:
    def __init__(self):
        self.rows: list[tuple[str, str, str]] = []

    def add(self, name: str, ok: bool, detail: str):
        self.rows.append((name, "ok" if ok else "FAIL", detail))

    def print(self, title: str) -> int:
        width = max(len(r[0]) for r in self.rows)
        print(f"{'check'.ljust(width)}  result  detail")
        for name, result, detail in self.rows:
            print(f"{name.ljust(width)}  {result.ljust(6)}  {detail}")
        failed = sum(1 for r in self.rows if r[1] != "ok")
        print(f"\n{title}: {len(self.rows) - failed} of {len(self.rows)} checks passed")
        return failed


def login(browser: Browser, token: str, t: Table, label: str) -> bool:
    """GET /login for the _xsrf cookie, POST /login with the token for the auth cookie."""
    status, _, _ = browser.request("GET", "/login")
    xsrf = browser.cookies.get("_xsrf")
    t.add(f"{label}GET /login → _xsrf cookie", status == 200 and bool(xsrf), f"HTTP {status}, _xsrf {'set' if xsrf else 'missing'}")
    if not xsrf:
        return False
    form = urllib.parse.urlencode({"_xsrf": xsrf, "password": token}).encode()
    before = set(browser.cookies)
    status, headers, _ = browser.request(
        "POST", "/login", form, {"Content-Type": "application/x-www-form-urlencoded"})
    auth = sorted(set(browser.cookies) - before - {"_xsrf"})
    ok = status == 302 and bool(auth)
    t.add(f"{label}POST /login (token) → auth cookie", ok, f"HTTP {status} → {headers.get('Location')}, cookie {','.join(auth) or 'none'}")
    return ok


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--plain-host")
    args = ap.parse_args()
    t = Table()

    anon = Browser(args.url)
    status, _, _ = anon.request("GET", "/api/kernels")
    t.add("GET /api/kernels without login → 403", status == 403, f"HTTP {status}")

    b = Browser(args.url)
    kernel_id = None
    if login(b, args.token, t, ""):
        status, _, body = b.request("GET", "/api/status")
        t.add("GET /api/status with the cookie", status == 200, f"HTTP {status} {body[:60].decode(errors='replace')}")
        status, _, body = b.request("POST", "/api/kernels", b"{}", {"Content-Type": "application/json"})
        try:
            kernel_id = json.loads(body)["id"] if status == 201 else None
        except (ValueError, KeyError):
            kernel_id = None
        t.add("POST /api/kernels (X-XSRFToken) → 201", kernel_id is not None, f"HTTP {status}, kernel {kernel_id}")
    # preserve_host passes any Host on: Jupyter on loopback refuses a name that is not
    # local (its DNS-rebinding guard) unless ServerApp.allow_remote_access is set.
    # The token header authenticates whatever the Host (the login cookie is named after it).
    by_token = {"Authorization": f"token {args.token}", "Origin": None}
    local, _, _ = anon.request("GET", "/api/status", headers=by_token)
    status, _, _ = anon.request("GET", "/api/status", headers={**by_token, "Host": "jupyter.example"})
    t.add("Host jupyter.example → 403 (allow_remote_access off)", local == 200 and status == 403,
          f"HTTP {status} (with the local Host: {local})")
    if kernel_id:
        try:
            result, reply, seen = await execute(b, kernel_id, "1+1")
            t.add("channels WebSocket: execute 1+1 → 2", result == "2" and reply == "ok",
                  f"execute_result {result!r}, execute_reply {reply}; {len(seen)} messages")
            result, reply, _ = await execute(b, kernel_id, "'ü' * 3")
            t.add("second channels WebSocket: UTF-8 result", result == "'üüü'" and reply == "ok", f"{result!r}")
        except (OSError, InvalidStatus, TimeoutError, asyncio.TimeoutError) as e:
            t.add("channels WebSocket: execute 1+1 → 2", False, f"{type(e).__name__}: {e}")
        status, _, _ = b.request("DELETE", f"/api/kernels/{kernel_id}")
        listed = b.request("GET", "/api/kernels")
        left = [k["id"] for k in json.loads(listed[2] or b"[]")] if listed[0] == 200 else None
        t.add("DELETE /api/kernels/{id} → 204, none left", status == 204 and left == [],
              f"HTTP {status}, kernels left {left}")

    if args.plain_host:
        # Without preserve_host the backend sees Host = its own address, while a browser's
        # Origin names wsgate: Jupyter's same-origin checks (Origin against Host) refuse.
        p = Browser(args.plain_host)
        status, _, _ = p.request("GET", "/login")
        form = urllib.parse.urlencode({"_xsrf": p.cookies.get("_xsrf", ""), "password": args.token}).encode()
        form_type = {"Content-Type": "application/x-www-form-urlencoded"}
        status, _, _ = p.request("POST", "/login", form, form_type)
        t.add("no preserve_host: POST /login refused", status == 404,
              f"HTTP {status} (Jupyter: Blocking Cross Origin API request)")
        # A client that sends no Origin (not a browser) gets in, and gets a kernel...
        status, _, _ = p.request("POST", "/login", form, {**form_type, "Origin": None})
        status, _, body = p.request("POST", "/api/kernels", b"{}", {"Content-Type": "application/json", "Origin": None})
        kid = json.loads(body)["id"] if status == 201 else None
        if kid:
            # ...but the kernel's WebSocket with the browser's Origin is refused.
            try:
                await execute(p, kid, "1+1")
                t.add("no preserve_host: channels WebSocket refused", False, "the upgrade was accepted")
            except InvalidStatus as e:
                t.add("no preserve_host: channels WebSocket refused", e.response.status_code == 403,
                      f"HTTP {e.response.status_code} (Origin does not match Host)")
            p.request("DELETE", f"/api/kernels/{kid}", headers={"Origin": None})
        else:
            t.add("no preserve_host: channels WebSocket refused", False, f"no kernel to try: HTTP {status}")
    return 1 if t.print("jupyter") else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
