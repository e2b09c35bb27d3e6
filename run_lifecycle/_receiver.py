"""A small, deliberately flaky callback receiver on 127.0.0.1 for the demo.

It answers a share of requests with HTTP 503, so a new user watching
``run-lifecycle demo --callbacks local`` sees retries happen, and it counts
what it received, deduplicating on the ``webhook-id`` header as a real
receiver should.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

__all__ = ["FlakyReceiver"]


class FlakyReceiver:
    """An HTTP server on 127.0.0.1 (an ephemeral port) that fails ``failure_rate`` of requests."""

    def __init__(self, *, failure_rate: float = 0.3, seed: int = 0) -> None:
        self.failure_rate = failure_rate
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.statuses: Counter[int] = Counter()
        self.delivered_ids: set[str] = set()
        self.duplicates = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                webhook_id = self.headers.get("webhook-id", "")
                with receiver._lock:
                    fail = receiver._rng.random() < receiver.failure_rate
                    status = 503 if fail else 204
                    receiver.statuses[status] += 1
                    if not fail:
                        if webhook_id in receiver.delivered_ids:
                            receiver.duplicates += 1
                        receiver.delivered_ids.add(webhook_id)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: the demo prints its own summary

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="flaky-receiver", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/callbacks"

    def start(self) -> FlakyReceiver:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FlakyReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
