"""``run-lifecycle demo``: a simulated agent runtime on a real store, with a summary."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._demo import DEMO_LEASE, run_demo
from .._events import AuditRecord, AuditSink, CallbackAttempt
from .._validate import check_callback_url
from ..exceptions import InvalidRunInput
from ..serialization import dumps

__all__ = ["register"]

DEFAULT_DB = "sqlite:///runs.db"


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "demo",
        help="simulate an agent runtime driving runs on a store, and summarise",
        description=(
            "Drive N runs through realistic lifecycles on a store: K agent workers (first tokens,"
            " every stop reason, failures, approvals, crashes), a canceller racing them on the same"
            " runs, late duplicate triggers, the reaper for crashed workers, and optionally an audit"
            " log and completion callbacks. Ends with a summary."
        ),
    )
    parser.add_argument("--runs", type=_positive, default=200, help="how many runs (default: 200)")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed: the same seed gives every run the same plan (default: 0)",
    )
    parser.add_argument(
        "--db",
        default=DEFAULT_DB,
        metavar="URL",
        help=f"the store: sqlite:///PATH, postgresql://..., or memory:// (default: {DEFAULT_DB})",
    )
    parser.add_argument(
        "--workers", type=_positive, default=4, help="simulated agent workers (default: 4)"
    )
    parser.add_argument(
        "--audit", type=Path, metavar="PATH", help="append every event to this audit log (JSONL)"
    )
    callbacks = parser.add_mutually_exclusive_group()
    callbacks.add_argument(
        "--callback-url",
        metavar="URL",
        help="give every run this callback_url and deliver the completion callbacks",
    )
    callbacks.add_argument(
        "--callbacks",
        choices=("local",),
        help="local: start a receiver on 127.0.0.1 that fails a share of requests, to show retries",
    )
    parser.add_argument("--secret", help="sign callbacks with this Standard Webhooks secret")
    parser.add_argument(
        "--export",
        type=Path,
        metavar="PATH",
        help="write this demo's final runs, one Letta JSON a line",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..stores import open_store

    with contextlib.ExitStack() as stack:
        log = None
        if args.audit is not None:
            from ..audit import AuditLog

            log = stack.enter_context(AuditLog(args.audit))
        tally = CallbackTally(log)
        if args.callback_url is not None:
            check_callback_url(args.callback_url, InvalidRunInput)
        store = stack.enter_context(open_store(args.db, audit=tally, lease=DEMO_LEASE))
        callback_url = args.callback_url
        receiver = None
        if args.callbacks == "local":
            from .._receiver import FlakyReceiver

            receiver = stack.enter_context(FlakyReceiver(seed=args.seed))
            callback_url = receiver.url
        deliverer = None
        if callback_url is not None:
            deliverer = stack.enter_context(_deliverer(store, args.secret))
            stack.enter_context(deliverer.in_background(poll_interval=0.05))
        with _progress(args.runs, quiet=args.json) as advance:
            result = run_demo(
                store,
                runs=args.runs,
                seed=args.seed,
                workers=args.workers,
                callback_url=callback_url,
                progress=advance,
            )
        if deliverer is not None:
            _drain(store, deliverer)
            result.callbacks = tally.summary(pending=len(store.pending_deliveries()))
            if receiver is not None:
                result.callbacks["receiver_duplicates"] = receiver.duplicates
        result.store = _display_url(args.db)
        result.runs = [store.get(run_id) for run_id in result.run_ids]
        if args.export is not None:
            with args.export.open("w", encoding="utf-8") as out:
                for item in result.runs:
                    out.write(dumps(item) + "\n")
    summary = result.summary()
    if args.audit is not None:
        summary["audit"] = str(args.audit)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _render(summary)
    return 0


def _deliverer(store: Any, secret: str | None) -> Any:
    from ..callbacks import Deliverer, RetryPolicy

    # Short delays so a person watching sees the retries happen within the demo.
    retry = RetryPolicy(
        initial_delay=0.05, multiplier=2.0, max_delay=0.5, jitter=0.2, max_attempts=6
    )
    return Deliverer(store, secret=secret, timeout=2.0, retry=retry)


def _drain(store: Any, deliverer: Any, timeout: float = 30.0) -> None:
    """Deliver what is still pending, retries included, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while store.pending_deliveries() and time.monotonic() < deadline:
        deliverer.run_once()
        time.sleep(0.05)


class CallbackTally:
    """An audit sink in front of the real one that counts callback attempts per delivery."""

    def __init__(self, inner: AuditSink | None) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self.attempts = 0
        self.last_status: dict[str, int | None] = {}

    def write(self, record: AuditRecord) -> None:
        if isinstance(record, CallbackAttempt):
            with self._lock:
                self.attempts += 1
                self.last_status[record.webhook_id] = record.status_code
        if self.inner is not None:
            self.inner.write(record)

    def summary(self, *, pending: int) -> dict[str, int]:
        with self._lock:
            deliveries = len(self.last_status)
            delivered = sum(
                1 for code in self.last_status.values() if code is not None and 200 <= code < 300
            )
            return {
                "delivered": delivered,
                "attempts": self.attempts,
                "retried": self.attempts - deliveries,
                "failed": max(0, deliveries - delivered - pending),
                "pending": pending,
            }


def _display_url(url: str) -> str:
    """The store URL without its password."""
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", url)


@contextlib.contextmanager
def _progress(total: int, *, quiet: bool) -> Iterator[Any]:
    try:
        from ._summary import progress
    except ImportError:  # rich is in the cli extra; without it, no bar
        yield None
        return
    if quiet:
        yield None
        return
    with progress(total) as advance:
        yield advance


def _render(summary: dict[str, Any]) -> None:
    try:
        from ._summary import render_summary
    except ImportError:
        print(json.dumps(summary, indent=2))
        return
    render_summary(summary)
