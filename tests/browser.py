"""A real headless Chromium driven over the Chrome DevTools Protocol, for the status page's
tests: a WebSocket client of a few dozen lines over the standard library (no dependency), the
browser started on loopback with a fresh profile, every wait bounded.

    with Browser.start(require_tool("chromium")) as browser:
        browser.open("http://127.0.0.1:9847/", width=1280, height=800)
        browser.evaluate("document.title")
        Path("shot.png").write_bytes(browser.screenshot())

``Runtime.evaluate`` runs on the DevTools side: the page's Content-Security-Policy does not
apply to it (it measures; it is not how a page's script would run).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

# Flags that work as root on a machine without network, display or D-Bus.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


class WebSocket:
    """A client WebSocket (RFC 6455) over a plain socket: text frames out (masked), text
    frames in (fragmented or not), pings answered. Enough for DevTools on loopback."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            head += chunk
        head, _, self._buffer = head.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"no WebSocket upgrade: {head[:100]!r}")

    def _exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buffer)))
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def _frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send(self, text: str) -> None:
        self._frame(0x1, text.encode())

    def recv(self) -> str:
        message = b""
        while True:
            first, second = self._exactly(2)
            n = second & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._exactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._exactly(8))
            mask = self._exactly(4) if second & 0x80 else b""
            payload = self._exactly(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = first & 0x0F
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the WebSocket")
            if opcode == 0x9:
                self._frame(0xA, payload)  # pong
                continue
            if opcode in (0x0, 0x1, 0x2):
                message += payload
                if first & 0x80:
                    return message.decode()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._frame(0x8, b"")
        self.sock.close()


class Browser:
    """One headless Chromium and a DevTools session on its first page."""

    def __init__(self, process: subprocess.Popen[bytes], profile: str, page_ws: str) -> None:
        self.process = process
        self.profile = profile
        self.ws = WebSocket(page_ws, timeout=20)
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    @classmethod
    @contextlib.contextmanager
    def start(cls, chromium: str, timeout: float = 20) -> Iterator[Browser]:
        profile = tempfile.mkdtemp(prefix="smsp-chromium-")
        process = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        browser = None
        try:
            port = cls._devtools_port(profile, process, timeout)
            page_ws = cls._page(port, timeout)
            browser = cls(process, profile, page_ws)
            yield browser
        finally:
            if browser is not None:
                browser.ws.close()
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            shutil.rmtree(profile, ignore_errors=True)

    @staticmethod
    def _devtools_port(profile: str, process: subprocess.Popen[bytes], timeout: float) -> int:
        """The port Chromium chose: it writes it to DevToolsActivePort in its profile."""
        path = os.path.join(profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"chromium exited with {process.returncode}")
            with contextlib.suppress(OSError, ValueError, IndexError), open(path) as file:
                return int(file.read().split()[0])
            time.sleep(0.05)
        raise TimeoutError("chromium did not open its DevTools port")

    @staticmethod
    def _page(port: int, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                    targets = json.load(r)
                for target in targets:
                    if target.get("type") == "page":
                        return str(target["webSocketDebuggerUrl"])
            time.sleep(0.05)
        raise TimeoutError("chromium shows no page target")

    def call(self, method: str, timeout: float = 20, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result (events read meanwhile are kept in ``events``)."""
        self._next_id += 1
        ident = self._next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        self.ws.sock.settimeout(timeout)
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            self.events.append(message)

    def wait_event(self, method: str, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for index, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(index)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {method} within {timeout} s")
            self.ws.sock.settimeout(left)
            self.events.append(json.loads(self.ws.recv()))

    def open(self, url: str, width: int, height: int, mobile: bool = False) -> None:
        """Load ``url`` in a viewport ``width`` x ``height`` CSS pixels, until it has loaded."""
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Log.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=mobile,
        )
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (DevTools side: not the page's)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self) -> bytes:
        """A PNG of the viewport."""
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def console(self) -> list[str]:
        """What the page logged (CSP violations are reported there)."""
        texts = []
        for event in self.events:
            if event.get("method") == "Log.entryAdded":
                texts.append(str(event["params"]["entry"].get("text", "")))
            elif event.get("method") == "Runtime.consoleAPICalled":
                texts.append(" ".join(str(a.get("value")) for a in event["params"]["args"]))
        return texts


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG, from its IHDR chunk."""
    if not re.match(rb"\x89PNG\r\n\x1a\n", data[:8]):
        raise ValueError("not a PNG")
    width, height = struct.unpack("!II", data[16:24])
    return width, height
