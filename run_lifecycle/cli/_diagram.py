"""``run-lifecycle diagram``: the lifecycle from the machine definition, or one run's story.

Three jobs, one command:

- no ``--run``: the lifecycle graph as mermaid, DOT or SVG, to stdout or ``--output``;
- ``--write-all DIR``: regenerate ``lifecycle.mmd``, ``lifecycle.dot`` and
  ``lifecycle.svg`` (the checked-in ``diagrams/``). Without Graphviz it still
  writes the first two, says how to get ``dot``, and succeeds: only an
  explicit ``--format svg`` fails for want of it;
- ``--run RUN_ID`` with ``--db URL`` or ``--audit PATH``: that run's path through
  the graph, its rejected attempts, or (``--format timeline``) its timeline.

The stores and the audit log are imported only when asked for, so drawing the
lifecycle needs no database driver.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .._events import AuditRecord
from ..diagrams import (
    FILE_NAMES,
    GRAPHVIZ_HINT,
    RUN_FORMATS,
    dot_program,
    render_lifecycle,
    render_run,
    write_all,
)
from ..exceptions import RunNotFound

__all__ = ["register", "run"]

_EXIT_USAGE = 2

_EXAMPLES = """\
examples:
  run-lifecycle diagram                          the lifecycle as mermaid, on stdout
  run-lifecycle diagram --format svg -o lifecycle.svg
  run-lifecycle diagram --write-all diagrams/    regenerate diagrams/ (mermaid, DOT, SVG)
  run-lifecycle diagram --run RUN_ID --db sqlite:///runs.db --format svg -o run.svg
  run-lifecycle diagram --run RUN_ID --audit audit.jsonl --format timeline
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "diagram",
        help="draw the lifecycle graph, or one run's path and timeline",
        description=(
            "Draw the lifecycle graph from the live transitions definition (mermaid,\n"
            "Graphviz DOT, or SVG through Graphviz's dot program), or, with --run, the path\n"
            "one run took through it with the triggers it refused, or its timeline."
        ),
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--format",
        "-f",
        choices=RUN_FORMATS,
        default=None,
        help=(
            "mermaid stateDiagram-v2 (renders on GitHub; the default), Graphviz dot, svg (needs"
            " Graphviz's dot program), or timeline (a mermaid gantt of one run; needs --run)"
        ),
    )
    parser.add_argument(
        "--output", "-o", type=Path, metavar="PATH", help="write to PATH instead of stdout"
    )
    parser.add_argument(
        "--write-all",
        type=Path,
        metavar="DIR",
        help=(
            "write lifecycle.mmd, lifecycle.dot and lifecycle.svg into DIR (the checked-in"
            " diagrams/); without Graphviz the SVG is skipped with a note"
        ),
    )
    parser.add_argument(
        "--run",
        metavar="RUN_ID",
        help="draw this run's story; its records come from --db or --audit",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--db",
        metavar="URL",
        help="the store holding the run, e.g. sqlite:///runs.db or postgresql://host/db",
    )
    source.add_argument(
        "--audit", type=Path, metavar="PATH", help="the JSONL audit log holding the run's records"
    )
    parser.set_defaults(func=run, diagram_parser=parser)


def _usage_problem(args: argparse.Namespace) -> str | None:
    if args.write_all is not None:
        clashing = [
            option
            for option, value in (
                ("--format", args.format),
                ("--output", args.output),
                ("--run", args.run),
                ("--db", args.db),
                ("--audit", args.audit),
            )
            if value is not None
        ]
        if clashing:
            return f"--write-all writes every format itself; drop {', '.join(clashing)}"
        return None
    if args.run is None:
        if args.db is not None or args.audit is not None:
            return "--db and --audit say where a run's records are: name the run with --run RUN_ID"
        if args.format == "timeline":
            return "--format timeline draws one run: add --run RUN_ID and --db URL or --audit PATH"
        return None
    if args.db is None and args.audit is None:
        return f"--run {args.run}: say where its records are, with --db URL or --audit PATH"
    return None


def _from_audit(path: Path, run_id: str) -> list[AuditRecord]:
    from ..audit import read_records  # AuditError for a missing or unreadable file

    return [record for record in read_records(path) if record.run_id == run_id]


def _from_store(url: str, run_id: str) -> list[AuditRecord]:
    from ._runs import open_existing  # never creates an empty database for a mistyped path

    with open_existing(url) as store:
        store.get(run_id)  # RunNotFound, in the store's words, for an unknown id
        return list(store.history(run_id))


def _write_all(directory: Path) -> int:
    svg = dot_program() is not None
    for path in write_all(directory, svg=svg):
        print(f"wrote {path}")
    if not svg:
        print(
            f"run-lifecycle: note: {directory / FILE_NAMES['svg']} not written. {GRAPHVIZ_HINT}",
            file=sys.stderr,
        )
    return 0


def run(args: argparse.Namespace) -> int:
    problem = _usage_problem(args)
    if problem is not None:
        parser: argparse.ArgumentParser = args.diagram_parser
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {problem}", file=sys.stderr)
        return _EXIT_USAGE
    if args.write_all is not None:
        return _write_all(args.write_all)
    fmt = args.format or "mermaid"
    if args.run is None:
        text = render_lifecycle(fmt)
    else:
        if args.audit is not None:
            records = _from_audit(args.audit, args.run)
        else:
            records = _from_store(args.db, args.run)
        if not records:
            raise RunNotFound(args.run)
        text = render_run(records, fmt, run_id=args.run)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    return 0
