"""Ratio benchmarks of run-lifecycle against the alternatives: ``python -m benchmarks``.

Every figure is measured in the same run as its baseline, the two paired
(A B A B ...), and reported as a ratio of medians-of-pairs; raw times are
printed beside for context only, because the machines are shared and noisy.
The groups:

- ``engine``: one in-memory lifecycle through ``Lifecycle`` against a
  hand-written dict table (the limit), ``transitions`` with a ``Machine`` per
  run, and ``python-statemachine`` with a machine per run;
- ``memory``: bytes per live ``Run``, and growth over many lifecycles;
- ``stores``: the SQLite and PostgreSQL stores against the raw driver running
  the same transactions, and PostgreSQL with 1, 2, 4 and 8 threads;
- ``audit``: ``AuditLog`` at each durability setting against a raw append.

Nothing here asserts speed: the run exits 0 whenever it ran, and the table
says which targets were met.
"""

from __future__ import annotations

from ._harness import Figure, Pair, Report, paired, ratio_figure

__all__ = ["Figure", "Pair", "Report", "paired", "ratio_figure"]
