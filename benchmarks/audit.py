"""Audit log: records appended per second by ``AuditLog`` at each durability setting.

The records are those of real lifecycles (a ``RunCreated`` and three
``TransitionEvent`` each), made once and cycled. Two baselines, each with
the same ``fsync`` policy as the log (``always``: ``fdatasync`` after every
line; ``batch``: after every ``batch`` lines; ``never``):

- ``plain JSONL append``: what a logger without the chain does with an event:
  ``json.dumps(record.to_dict())`` and ``os.write`` of the line. This is the
  raw file append the target is measured against (an event must become bytes
  to be appended);
- ``raw append``: ``os.write`` of the very bytes the log writes, encoded
  beforehand, on an ``O_APPEND`` descriptor: the floor, what the disk costs
  (context only: no Python writer that encodes its events can come near it);
- ``hand-written chain``: the same line format written out by hand (canonical
  JSON, SHA-256 chain, ``os.write``) without the log's locks and checks: what
  the format costs. ``tests/test_benchmarks.py`` checks it writes a file byte
  for byte equal to the log's.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from run_lifecycle import AuditRecord
from run_lifecycle.audit import AuditLog

from ._harness import Report, paired, ratio_figure
from .engine import Collect, lifecycle_factory

__all__ = ["ChainWriter", "Durability", "PlainJsonl", "RawAppend", "make_records", "run"]

Durability = Literal["always", "batch", "never"]
#: The log's default ``batch``: under ``fsync="batch"`` it syncs every this many lines.
BATCH = 100
GENESIS = "0" * 64
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
_sync = getattr(os, "fdatasync", os.fsync)


def make_records(lifecycles: int) -> list[AuditRecord]:
    """The records of ``lifecycles`` real lifecycles, in the order a ``Lifecycle`` reports them."""
    from run_lifecycle import SystemClock

    sink = Collect()
    one = lifecycle_factory(SystemClock(), sink)
    for _ in range(lifecycles):
        one(None)
    return sink.records


class _Policy:
    """The fsync policy shared by both baselines, counted as ``AuditLog`` counts it."""

    def __init__(self, path: Path, fsync: Durability, batch: int = BATCH) -> None:
        self.fd = os.open(path, _FLAGS, 0o644)
        self.fsync = fsync
        self.batch = batch
        self.unsynced = 0

    def append(self, data: bytes) -> None:
        os.write(self.fd, data)
        if self.fsync == "never":
            return
        self.unsynced += 1
        if self.fsync == "always" or self.unsynced >= self.batch:
            _sync(self.fd)
            self.unsynced = 0

    def close(self) -> None:
        if self.unsynced:
            _sync(self.fd)
        os.close(self.fd)


class ChainWriter(_Policy):
    """The audit line format by hand: ``to_dict`` + ``n`` + ``prev``, canonical JSON, SHA-256."""

    def __init__(self, path: Path, fsync: Durability, batch: int = BATCH) -> None:
        super().__init__(path, fsync, batch)
        self.n = 0
        self.prev = GENESIS

    def encode(self, record: AuditRecord) -> bytes:
        content = record.to_dict()
        self.n += 1
        content["n"] = self.n
        content["prev"] = self.prev
        body = json.dumps(
            content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        )
        self.prev = hashlib.sha256(body.encode("ascii")).hexdigest()
        return f'{body[:-1]},"hash":"{self.prev}"}}\n'.encode("ascii")

    def write(self, record: AuditRecord) -> None:
        self.append(self.encode(record))


class RawAppend(_Policy):
    """``os.write`` of lines encoded beforehand, cycled: the disk's share alone."""

    def __init__(self, path: Path, fsync: Durability, lines: list[bytes]) -> None:
        super().__init__(path, fsync)
        self.lines = lines
        self.next = 0

    def write_next(self) -> None:
        self.append(self.lines[self.next])
        self.next = (self.next + 1) % len(self.lines)


class PlainJsonl(_Policy):
    """A plain JSON Lines logger: encode the event, append the line; no chain, no lock."""

    def write(self, record: AuditRecord) -> None:
        line = json.dumps(record.to_dict(), separators=(",", ":")) + "\n"
        self.append(line.encode())


def _cycled(
    records: list[AuditRecord], write: Callable[[AuditRecord], None]
) -> Callable[[int], object]:
    position = 0

    def batch(n: int) -> None:
        nonlocal position
        count = len(records)
        for _ in range(n):
            write(records[position])
            position = (position + 1) % count

    return batch


def _compare(
    directory: Path, fsync: Durability, records: list[AuditRecord], *, ops: int, rounds: int
) -> Report:
    report = Report()
    encoder = ChainWriter(directory / f"encode-{fsync}.jsonl", "never")
    lines = [encoder.encode(record) for record in records]
    encoder.close()
    log = AuditLog(directory / f"log-{fsync}.jsonl", fsync=fsync, batch=BATCH)
    raw = RawAppend(directory / f"raw-{fsync}.jsonl", fsync, lines)
    chain = ChainWriter(directory / f"chain-{fsync}.jsonl", fsync)
    plain = PlainJsonl(directory / f"plain-{fsync}.jsonl", fsync)
    try:
        subject = _cycled(records, log.write)

        def raw_batch(n: int) -> None:
            for _ in range(n):
                raw.write_next()

        for baseline, name, title, target in (
            (_cycled(records, plain.write), "plain JSONL", "plain JSONL append", 0.5),
            (raw_batch, "raw append", "raw append of pre-encoded bytes", None),
            (
                _cycled(records, chain.write),
                "hand-written chain",
                "hand-written chain writer",
                None,
            ),
        ):
            pair = paired(subject, baseline, ops=ops, rounds=rounds)
            report.add(
                ratio_figure(
                    "audit",
                    f"AuditLog vs {title}, fsync={fsync}",
                    pair,
                    target=target,
                    subject="AuditLog",
                    baseline=name,
                    rate=True,
                )
            )
        if log.dropped:
            report.note(f"AuditLog(fsync={fsync}) dropped {log.dropped} records: {log.last_error}")
    finally:
        log.close()
        raw.close()
        chain.close()
        plain.close()
    return report


def run(*, quick: bool, tiny: bool = False) -> Report:
    """``AuditLog`` against both baselines at ``always``, ``batch`` and ``never``."""
    records = make_records(5 if tiny else 100)
    sizes: dict[Durability, tuple[int, int]]
    if tiny:
        sizes = {"always": (3, 2), "batch": (3, 2), "never": (3, 2)}
    elif quick:
        sizes = {"always": (40, 5), "batch": (1_000, 5), "never": (1_000, 5)}
    else:
        sizes = {"always": (150, 9), "batch": (3_000, 9), "never": (3_000, 9)}
    report = Report()
    with tempfile.TemporaryDirectory(prefix="run-lifecycle-bench-") as directory:
        for fsync, (ops, rounds) in sizes.items():
            report.extend(_compare(Path(directory), fsync, records, ops=ops, rounds=rounds))
    return report
