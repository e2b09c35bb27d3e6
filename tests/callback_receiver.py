"""Real HTTP receivers on 127.0.0.1 for the callback tests: scripted answers, recorded requests.

A ``Receiver`` is a ``ThreadingHTTPServer`` in a thread. It answers each
request with the next step of its script (a status code, a ``Reply`` with
headers, ``HANG`` to never answer, or a ``Reply`` that holds until an event is
set) and then with ``default``. Tests wait on conditions, never on sleeps, and
``close()`` releases every held handler and joins every thread.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

#: How long any wait inside a test may last before the test fails instead of hanging.
PATIENCE = 60.0


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a status, extra headers, and an event to wait for before answering."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hold: threading.Event | None = None


#: A script step: accept the request, read it, and never answer (until the receiver closes).
HANG = "hang"


@dataclass(frozen=True)
class Received:
    """A request as the receiver saw it; ``headers`` keeps the names as sent."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """A header's value, looked up case-insensitively as receivers must."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    def header_dict(self) -> dict[str, str]:
        return dict(self.headers)


class Receiver:
    """An HTTP server on an ephemeral 127.0.0.1 port that follows a script and records requests."""

    def __init__(self, script: Iterable[int | Reply | str] = (), *, default: int = 200) -> None:
        self._script = [Reply(step) if isinstance(step, int) else step for step in script]
        self._holds = [s.hold for s in self._script if isinstance(s, Reply) and s.hold is not None]
        self._default = Reply(default)
        self.requests: list[Received] = []
        self.arrived = threading.Condition()
        self._closing = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.receiver = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _next_step(self, request: Received) -> Reply | str:
        with self.arrived:
            self.requests.append(request)
            step = self._script.pop(0) if self._script else self._default
            self.arrived.notify_all()
        return step

    def wait_for_requests(self, count: int, timeout: float = PATIENCE) -> list[Received]:
        """Block until ``count`` requests have arrived; fail the test if they do not."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(
                    f"expected {count} requests within {timeout}s, got {len(self.requests)}"
                )
            return list(self.requests)

    def close(self) -> None:
        """Release held and hanging handlers, stop serving, and join every thread."""
        self._closing.set()
        for hold in self._holds:
            hold.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads: nothing outlives a test
    receiver: Receiver

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (a timeout under test) breaks the pipe: that is expected."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        received = Received(self.command, self.path, list(self.headers.items()), body)
        receiver = self.server.receiver
        step = receiver._next_step(received)
        if step == HANG or not isinstance(step, Reply):
            receiver._closing.wait(PATIENCE)
            self.close_connection = True
            return
        if step.hold is not None:
            step.hold.wait(PATIENCE)
        self.send_response(step.status)
        for name, value in step.headers.items():
            self.send_header(name, value)
        self.send_header("content-length", "0")
        self.end_headers()

    do_GET = do_POST
    do_PUT = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read ``requests``, not the console."""


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
