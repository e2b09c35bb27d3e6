"""The demo's summary as tables a person reads at a glance, and its progress bar.

``render_summary`` takes the plain dict the demo also prints as JSON and lays
it out with ``rich``: runs by status with their stop reasons beneath, the
ttft and total-duration percentiles, the triggers that were refused, races,
callbacks. Every key is optional (the dict grows as the demo learns to use a
store, callbacks and races), and a key it does not know is shown rather than
dropped. ``progress`` is a bar on a terminal and nothing at all elsewhere, so
piped output and CI logs stay clean.

``rich`` is imported when these run, not when the command line loads: the
other commands work without the ``cli`` extra.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeGuard

from .._run import RunStatus, StopReason
from ..exceptions import RunLifecycleError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

__all__ = ["progress", "render_summary"]

_PERCENTILES = ("p50", "p95", "p99")
_KNOWN = {
    "runs",
    "by_status",
    "by_stop_reason",
    "rejected_triggers",
    "rejected_total",
    "idempotent_noops",
    "races",
    "ttft_ms",
    "total_duration_ms",
    "callbacks",
    "reaped",
    "elapsed_s",
    "store",
    "audit",
}
#: Keys shown as one line each under the tables, in this order.
_FOOTER = (("store", "store"), ("audit", "audit log"), ("elapsed_s", "elapsed (s)"))


def _console(console: Console | None) -> Console:
    try:
        from rich.console import Console
    except ImportError:  # pragma: no cover - the cli extra brings rich
        raise RunLifecycleError(
            "the demo's summary and progress bar need rich: pip install 'run-lifecycle[cli]'"
        ) from None
    return console if console is not None else Console()


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _status_of(reason: str) -> str:
    try:
        return StopReason(reason).run_status.value
    except ValueError:
        return "other"


def _runs_table(summary: Mapping[str, Any]) -> Table | None:
    from rich.table import Table

    by_status = _mapping(summary.get("by_status"))
    by_reason = _mapping(summary.get("by_stop_reason"))
    if not by_status and not by_reason and "runs" not in summary:
        return None
    title = "Runs" if "runs" not in summary else f"{_text(summary['runs'])} runs"
    table = Table(title=title, title_justify="left")
    table.add_column("status")
    table.add_column("stop reason")
    table.add_column("runs", justify="right")
    order = [status.value for status in RunStatus]
    statuses = sorted(
        set(by_status) | {_status_of(r) for r in by_reason},
        key=lambda s: (order.index(s) if s in order else len(order), s),
    )
    for status in statuses:
        count = by_status.get(status)
        table.add_row(f"[bold]{status}[/bold]", "", "" if count is None else _text(count))
        for reason, value in by_reason.items():
            if _status_of(reason) == status:
                table.add_row("", reason, _text(value))
    return table


def _durations_table(summary: Mapping[str, Any]) -> Table | None:
    from rich.table import Table

    rows = [
        (name, _mapping(summary.get(key)))
        for name, key in (
            ("time to first token", "ttft_ms"),
            ("total duration", "total_duration_ms"),
        )
        if key in summary
    ]
    if not rows:
        return None
    table = Table(title="Durations (ms)", title_justify="left")
    table.add_column("")
    for percentile in _PERCENTILES:
        table.add_column(percentile, justify="right")
    for name, values in rows:
        table.add_row(name, *(_text(values.get(p, "-")) for p in _PERCENTILES))
    return table


def _triggers_table(summary: Mapping[str, Any]) -> Table | None:
    from rich.table import Table

    rows: list[tuple[str, str]] = []
    rejected = _mapping(summary.get("rejected_triggers"))
    if "rejected_total" in summary or rejected:
        total = summary.get("rejected_total", sum(v for v in rejected.values() if _is_int(v)))
        rows.append(("[bold]rejected triggers[/bold]", _text(total)))
        rows.extend((f"  {name}", _text(value)) for name, value in rejected.items())
    if "idempotent_noops" in summary:
        rows.append(("idempotent repeats (no-ops)", _text(summary["idempotent_noops"])))
    if "reaped" in summary:
        rows.append(("reaped (lease expired)", _text(summary["reaped"])))
    races = _mapping(summary.get("races"))
    if races:
        rows.append(("[bold]cancel/complete races[/bold]", _text(races.get("total", "-"))))
        for key, value in races.items():
            if key != "total":
                rows.append((f"  {key.replace('_', ' ')}", _text(value)))
        total, by_cancel = races.get("total"), races.get("won_by_cancel")
        if _is_int(total) and _is_int(by_cancel) and "won_by_complete" not in races:
            rows.append(("  won by complete", _text(total - by_cancel)))
    if not rows:
        return None
    table = Table(title="Triggers", title_justify="left")
    table.add_column("")
    table.add_column("count", justify="right")
    for row in rows:
        table.add_row(*row)
    return table


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _pairs_table(title: str, values: Mapping[str, Any]) -> Table | None:
    from rich.table import Table

    if not values:
        return None
    table = Table(title=title, title_justify="left")
    table.add_column("")
    table.add_column("", justify="right")
    table.show_header = False
    for key, value in values.items():
        shown = (
            value
            if not isinstance(value, Mapping)
            else ", ".join(f"{k} {v}" for k, v in value.items())
        )
        table.add_row(str(key).replace("_", " "), _text(shown))
    return table


def render_summary(summary: Mapping[str, Any], *, console: Console | None = None) -> None:
    """Print the demo's summary as tables: runs, durations, triggers and races, callbacks.

    ``console`` defaults to a ``rich`` console on stdout. Missing keys are
    skipped, unknown ones listed under "Other".
    """
    from rich.columns import Columns

    out = _console(console)
    tables = [
        _runs_table(summary),
        _durations_table(summary),
        _triggers_table(summary),
        _pairs_table("Callbacks", _mapping(summary.get("callbacks"))),
        _pairs_table("Other", {k: v for k, v in summary.items() if k not in _KNOWN}),
    ]
    shown = [table for table in tables if table is not None]
    if shown:
        out.print(Columns(shown, padding=(1, 3)))
    footer = [f"{name}: {_text(summary[key])}" for key, name in _FOOTER if key in summary]
    for line in footer:
        out.print(line, highlight=False, markup=False)
    if not shown and not footer:
        out.print("nothing to summarise")


def _ignore(n: int = 1) -> None:
    """``advance`` where no bar is drawn."""


@contextlib.contextmanager
def progress(
    total: int, *, console: Console | None = None, description: str = "runs"
) -> Iterator[Callable[[int], None]]:
    """A progress bar over ``total`` items; yields ``advance(n)``: n more items are done.

    ``advance`` may be called from several threads (the demo's workers each
    report their runs). The bar is drawn only when the console is a terminal
    and vanishes when done; elsewhere ``advance`` does nothing.
    """
    out = _console(console)
    if not out.is_terminal:
        yield _ignore
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)

        def advance(n: int = 1) -> None:
            bar.advance(task, n)

        yield advance
