"""The lifecycle drawn from the live machine definition: mermaid, Graphviz DOT and SVG.

Nothing here lists an edge or a stop reason. ``lifecycle_graph()`` walks
``MACHINE``'s events and transitions and asks the machine itself (through
``decide``) which stop reasons each edge accepts and under which current stop
reason its state guard lets it through (the approval-denied cancel); an
internal transition is probed with ``apply_trigger`` to learn what it sets.
The renderers turn that small model into text, so a change to the definition
changes the diagrams, and the freshness test of ``diagrams/`` notices.

One run's story (``render_run``) is the same graph with the path the run took
highlighted, step by step, and the triggers it refused shown beside the
status it was in; ``timeline`` draws it on a time axis instead.

Regenerate the checked-in files with ``run-lifecycle diagram --write-all diagrams/``
(or ``python -m run_lifecycle.diagrams``). SVG needs Graphviz's ``dot``
program; mermaid and DOT never do.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import attrs

from ._events import AuditRecord, RejectedAttempt
from ._machine import DEFINITION, GUARD_DESCRIPTIONS, MACHINE, STOP_REASON_GUARD, decide
from ._machine import apply_trigger as _apply_trigger
from ._run import TERMINAL_STATUSES, Run, RunStatus, StopReason
from ._run_story import RunStory, story_of
from ._timeline import format_ns, mermaid_text, render_timeline
from .exceptions import DiagramError, TransitionError

__all__ = [
    "FILE_NAMES",
    "FORMATS",
    "GRAPHVIZ_HINT",
    "MERMAID_INLINE_REASONS",
    "RUN_FORMATS",
    "Edge",
    "Graph",
    "RunStory",
    "dot_program",
    "lifecycle_graph",
    "main",
    "render_dot",
    "render_lifecycle",
    "render_mermaid",
    "render_run",
    "render_svg",
    "render_timeline",
    "story_of",
    "write_all",
]

#: The formats of the lifecycle diagram, and of one run's (which adds ``timeline``).
FORMATS: tuple[str, ...] = ("mermaid", "dot", "svg")
RUN_FORMATS: tuple[str, ...] = (*FORMATS, "timeline")
#: The files ``write_all`` keeps in ``diagrams/``.
FILE_NAMES: dict[str, str] = {
    "mermaid": "lifecycle.mmd",
    "dot": "lifecycle.dot",
    "svg": "lifecycle.svg",
}
#: A mermaid edge lists this many stop reasons at most; longer lists go to a note on the state.
MERMAID_INLINE_REASONS = 4
GRAPHVIZ_HINT = (
    "SVG needs Graphviz's `dot` program, which is not on PATH: install Graphviz"
    " (Debian/Ubuntu: apt-get install graphviz; Fedora: dnf install graphviz;"
    " macOS: brew install graphviz; Windows: winget install graphviz),"
    " or draw --format mermaid or --format dot, which need nothing"
)

_TAKEN = "#d95f02"
_VISITED_FILL = "#fde0c5"
_REJECTED = "#c0392b"
_MUTED = "gray60"
_NOTE_UNSAFE = re.compile(r"[<>#\r\n]")
_END_NOTE = re.compile(r"end(\s+)note", re.IGNORECASE)  # would close a note mid-line


@attrs.frozen
class Edge:
    """One transition of the machine: ``source --trigger--> dest``, with what guards it.

    ``stop_reasons`` are the reasons the machine accepts on this edge (empty
    for triggers that take none); ``guards`` name the state guards beyond the
    stop-reason check (e.g. ``approval_pending``) and ``when_stop_reason`` the
    run's current stop reasons under which they pass; ``effects`` say what an
    internal transition (one that stays in its state) sets.
    """

    source: str
    dest: str
    trigger: str
    stop_reasons: tuple[str, ...] = ()
    guards: tuple[str, ...] = ()
    when_stop_reason: tuple[str, ...] = ()
    effects: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str, str]:
        """``(source, dest, trigger)``, as a run's events name the edge."""
        return (self.source, self.dest, self.trigger)

    @property
    def label(self) -> str:
        """The full one-line label: trigger, accepted stop reasons, condition, effects."""
        return " ".join(_label_parts(self, self.stop_reasons))


@attrs.frozen
class Graph:
    """States (in definition order), the initial state, terminal states and edges."""

    states: tuple[str, ...]
    initial: str
    terminal: frozenset[str]
    edges: tuple[Edge, ...]


# -- the model, from the machine ----------------------------------------------------------------

_PROBE_TIME = datetime(2000, 1, 1, tzinfo=UTC)
_PROBE_ID = "run-00000000-0000-4000-8000-000000000000"


def _currents(status: str) -> list[StopReason | None]:
    """The stop reasons a run in ``status`` can carry (none before it ends)."""
    if RunStatus(status) in TERMINAL_STATUSES:
        return [reason for reason in StopReason if reason.run_status.value == status]
    return [None]


def _effects(source: str, trigger: str) -> tuple[str, ...]:
    """What an internal transition sets, learned by applying it to a probe run (twice)."""
    probe = Run(
        id=_PROBE_ID,
        agent_id="probe",
        created_at=_PROBE_TIME,
        status=RunStatus(source),
        created_monotonic_ns=0,
    )
    try:
        once, event = _apply_trigger(probe, trigger, now=_PROBE_TIME, monotonic_ns=1)
        again = _apply_trigger(once, trigger, now=_PROBE_TIME, monotonic_ns=2)[1]
    except TransitionError:
        return ()
    if event is None:
        return ()
    suffix = " once" if again is None else ""
    return tuple(f"sets {field}{suffix}" for field in sorted(event.changes))


def _edge(source: str, dest: str, trigger: str, conditions: list[str]) -> Edge:
    state_guards = tuple(name for name in conditions if name != STOP_REASON_GUARD)
    currents = _currents(source)
    # Only a transition guarded by the stop reason takes one (apply_trigger refuses it elsewhere).
    requests: list[StopReason | None] = [None]
    if STOP_REASON_GUARD in conditions:
        requests.extend(StopReason)
    accepted = [
        (current, requested)
        for current in currents
        for requested in requests
        if (answer := decide(source, current, trigger, requested)).outcome == "accept"
        and (answer.dest or source) == dest
    ]
    reasons = tuple(
        dict.fromkeys(requested.value for _, requested in accepted if requested is not None)
    )
    allowing = [current for current in currents if any(c is current for c, _ in accepted)]
    when: tuple[str, ...] = ()
    if len(allowing) < len(currents):
        when = tuple(current.value for current in allowing if current is not None)
    return Edge(
        source=source,
        dest=dest,
        trigger=trigger,
        stop_reasons=reasons,
        guards=state_guards,
        when_stop_reason=when,
        effects=_effects(source, trigger) if dest == source else (),
    )


def lifecycle_graph() -> Graph:
    """The machine's graph, each edge labelled with what the machine accepts on it."""
    edges: list[Edge] = []
    for trigger, event in MACHINE.events.items():
        for source, transitions in event.transitions.items():
            for transition in transitions:
                conditions = [str(condition.func) for condition in transition.conditions]
                dest = transition.dest if transition.dest is not None else source
                edges.append(_edge(source, dest, trigger, conditions))
    return Graph(
        states=tuple(DEFINITION["states"]),
        initial=str(DEFINITION["initial"]),
        terminal=frozenset(status.value for status in TERMINAL_STATUSES),
        edges=tuple(edges),
    )


# -- labels -------------------------------------------------------------------------------------


def _reasons_text(reasons: Sequence[str], limit: int | None) -> str:
    if limit is not None and len(reasons) > limit:
        return f"(any of {len(reasons)} stop reasons, see note)"
    return f"({' | '.join(reasons)})"


def _label_parts(edge: Edge, reasons: Sequence[str], limit: int | None = None) -> list[str]:
    parts = [edge.trigger]
    if reasons:
        parts.append(_reasons_text(reasons, limit))
    if edge.when_stop_reason:
        parts.append(f"[if stop_reason is {' or '.join(edge.when_stop_reason)}]")
    if edge.effects:
        parts.append("/ " + ", ".join(edge.effects))
    return parts


def _steps_by_edge(story: RunStory | None) -> dict[tuple[str, str, str], list[int]]:
    steps: dict[tuple[str, str, str], list[int]] = {}
    if story is not None:
        for step in story.steps:
            steps.setdefault((step.from_status, step.to_status, step.trigger), []).append(step.seq)
    return steps


def _taken_reasons(edge: Edge, story: RunStory) -> tuple[str, ...]:
    """The stop reasons the run actually used on ``edge`` (instead of every accepted one)."""
    used = [
        step.stop_reason
        for step in story.steps
        if (step.from_status, step.to_status, step.trigger) == edge.key and step.stop_reason
    ]
    return tuple(dict.fromkeys(used))


def _hms(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3]


def _rejection_text(attempt: RejectedAttempt, story: RunStory) -> str:
    asked = attempt.trigger
    if attempt.stop_reason is not None:
        asked += f" ({attempt.stop_reason})"
    offset = format_ns(story.offset_ns(attempt.at))
    return f"{asked} rejected at {_hms(attempt.at)} UTC (+{offset}), run was {attempt.status}"


def _run_summary(story: RunStory) -> list[str]:
    outcome = story.status
    if story.stop_reason is not None and RunStatus(story.status).is_terminal:
        outcome += f" ({story.stop_reason})"
    lines = [f"run {story.run_id}", f"agent {story.agent_id}", f"outcome {outcome}"]
    for name, value in (("ttft", story.ttft_ns), ("total", story.total_duration_ns)):
        if value is not None:
            lines.append(f"{name} {format_ns(value)}")
    return lines


# -- mermaid ------------------------------------------------------------------------------------


def _mermaid_notes(graph: Graph, story: RunStory | None) -> dict[str, list[str]]:
    """Note lines per state; mermaid keeps one note per state, so they are gathered first."""
    notes: dict[str, list[str]] = {}
    seen: set[tuple[str, str, tuple[str, ...]]] = set()
    for edge in graph.edges:
        if len(edge.stop_reasons) > MERMAID_INLINE_REASONS:
            key = (edge.dest, edge.trigger, edge.stop_reasons)
            if key not in seen:
                seen.add(key)
                lines = notes.setdefault(edge.dest, [])
                lines.append(f"{edge.trigger} takes one of these stop reasons")
                lines.extend(f"- {reason}" for reason in edge.stop_reasons)
        for guard in edge.guards:
            text = f"{edge.trigger} guard {guard}, {GUARD_DESCRIPTIONS.get(guard, guard)}"
            notes.setdefault(edge.source, []).append(text)
    if story is not None:
        notes.setdefault(graph.initial, [])[:0] = [_note_text(t) for t in _run_summary(story)]
        for attempt in story.rejected:
            text = _note_text(_rejection_text(attempt, story))
            notes.setdefault(attempt.status, []).append(text)
    return notes


def _note_text(text: str) -> str:
    """A note line: notes take ``:`` but not markup (``<``, ``>``), entities (``#``) or newlines."""
    return _END_NOTE.sub("end_note", _NOTE_UNSAFE.sub("_", text))


def render_mermaid(graph: Graph | None = None, *, story: RunStory | None = None) -> str:
    """A mermaid ``stateDiagram-v2`` (renders on GitHub); with ``story``, that run's path.

    Mermaid state diagrams cannot colour an edge, so a run's steps are numbered
    in their labels ("1. start") and the states it visited are filled; its
    rejected attempts are listed in a note on the state the run was in.
    """
    graph = graph or lifecycle_graph()
    steps = _steps_by_edge(story)
    lines = ["stateDiagram-v2", f"    [*] --> {graph.initial}"]
    for edge in graph.edges:
        if edge.key in steps and story is not None:
            numbers = ", ".join(str(seq) for seq in steps[edge.key])
            parts = _label_parts(edge, _taken_reasons(edge, story))
            label = f"{numbers}. {' '.join(parts)}"
        else:
            label = " ".join(_label_parts(edge, edge.stop_reasons, MERMAID_INLINE_REASONS))
        lines.append(f"    {edge.source} --> {edge.dest}: {mermaid_text(label)}")
    terminal = [state for state in graph.states if state in graph.terminal]
    lines.extend(f"    {state} --> [*]" for state in terminal)
    lines.append("    classDef terminal font-weight:bold,stroke-width:3px")
    lines.append(f"    class {','.join(terminal)} terminal")
    if story is not None:
        visited = [graph.initial, *(step.to_status for step in story.steps)]
        lines.append(f"    classDef visited fill:{_VISITED_FILL},stroke:{_TAKEN},stroke-width:3px")
        lines.append(f"    class {','.join(dict.fromkeys(visited))} visited")
    notes = _mermaid_notes(graph, story)
    for state in graph.states:
        note = notes.get(state)
        if note:
            lines.append(f"    note right of {state}")
            lines.extend(f"        {line}" for line in note)
            lines.append("    end note")
    return "\n".join(lines) + "\n"


# -- Graphviz DOT -------------------------------------------------------------------------------


def _dot_quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _dot_label(edge: Edge, reasons: Sequence[str], prefix: str = "") -> str:
    lines = [prefix + edge.trigger]
    for start in range(0, len(reasons), 3):
        chunk = " | ".join(reasons[start : start + 3])
        opening = "(" if start == 0 else ""
        closing = ")" if start + 3 >= len(reasons) else " |"
        lines.append(f"{opening}{chunk}{closing}")
    lines.extend(_label_parts(edge, ())[1:])
    return "\n".join(lines)


def _dot_attrs(pairs: Iterable[tuple[str, str]]) -> str:
    return ", ".join(f"{key}={value}" for key, value in pairs)


def _legend(graph: Graph) -> str:
    lines = ["double circle: terminal status"]
    guards = sorted({guard for edge in graph.edges for guard in edge.guards})
    lines.extend(f"{guard}: {GUARD_DESCRIPTIONS.get(guard, guard)}" for guard in guards)
    return "".join(line.replace("\\", "/").replace('"', "'") + "\\l" for line in lines)


def render_dot(graph: Graph | None = None, *, story: RunStory | None = None) -> str:
    """Graphviz DOT; terminal states are double circles; with ``story``, that run's path.

    Every edge carries ``id="edge_<source>_<dest>_<trigger>"``. A run's steps are
    drawn bold in orange (``penwidth=3``) and numbered with their time since
    creation, the rest muted; each rejected attempt is a dashed red edge from
    the state the run was in to a box that says what was refused and when.
    """
    graph = graph or lifecycle_graph()
    steps = _steps_by_edge(story)
    title = "run lifecycle" if story is None else "\n".join(_run_summary(story))
    lines = [
        "digraph run_lifecycle {",
        f'    graph [rankdir=LR, label={_dot_quote(title)}, labelloc=t, fontname="Helvetica",'
        " nodesep=0.5, ranksep=1.1];",
        '    node [shape=circle, fontname="Helvetica", fontsize=12, width=1.1, fixedsize=true];',
        '    edge [fontname="Helvetica", fontsize=10];',
        '    __start__ [shape=point, width=0.15, fixedsize=true, label=""];',
    ]
    visited = set()
    if story is not None:
        visited = {graph.initial, *(step.to_status for step in story.steps)}
    for state in graph.states:
        pairs = [("shape", "doublecircle" if state in graph.terminal else "circle")]
        if state in visited:
            pairs += [("style", "filled"), ("fillcolor", _dot_quote(_VISITED_FILL))]
            pairs += [("color", _dot_quote(_TAKEN)), ("penwidth", "2")]
        lines.append(f"    {state} [{_dot_attrs(pairs)}];")
    lines.append(f"    __start__ -> {graph.initial};")
    for edge in graph.edges:
        pairs = [("id", _dot_quote(f"edge_{edge.source}_{edge.dest}_{edge.trigger}"))]
        if story is not None and edge.key in steps:
            offsets = [
                f"step {step.seq} at +{format_ns(story.offset_ns(step.at))}"
                for step in story.steps
                if step.seq in steps[edge.key]
            ]
            text = _dot_label(edge, _taken_reasons(edge, story)) + "\n" + "\n".join(offsets)
            pairs += [("label", _dot_quote(text)), ("color", _dot_quote(_TAKEN))]
            pairs += [("fontcolor", _dot_quote(_TAKEN)), ("penwidth", "3")]
        else:
            pairs.append(("label", _dot_quote(_dot_label(edge, edge.stop_reasons))))
            if story is not None:
                pairs += [("color", _MUTED), ("fontcolor", _MUTED)]
        lines.append(f"    {edge.source} -> {edge.dest} [{_dot_attrs(pairs)}];")
    if story is not None:
        for index, attempt in enumerate(story.rejected, start=1):
            node = f"__rejected_{index}"
            text = _rejection_text(attempt, story).replace(" at ", "\nat ", 1)
            text = text.replace(", run was", "\nrun was", 1)
            box = [
                ("shape", "box"),
                ("style", _dot_quote("rounded,dashed")),
                ("fixedsize", "false"),
                ("color", _dot_quote(_REJECTED)),
                ("fontcolor", _dot_quote(_REJECTED)),
                ("fontsize", "10"),
                ("label", _dot_quote(text)),
            ]
            lines.append(f"    {node} [{_dot_attrs(box)}];")
            arrow = [
                ("id", _dot_quote(f"rejected_{index}")),
                ("style", "dashed"),
                ("color", _dot_quote(_REJECTED)),
                ("arrowhead", "tee"),
            ]
            lines.append(f"    {attempt.status} -> {node} [{_dot_attrs(arrow)}];")
    lines.append(
        f'    __legend__ [shape=note, fixedsize=false, fontsize=10, label="{_legend(graph)}"];'
    )
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- SVG through Graphviz -----------------------------------------------------------------------


def dot_program() -> str | None:
    """The path of Graphviz's ``dot`` program, or ``None`` when it is not installed."""
    return shutil.which("dot")


def render_svg(dot_source: str) -> str:
    """``dot_source`` laid out by Graphviz as SVG; ``DiagramError`` without ``dot`` or on failure."""
    program = dot_program()
    if program is None:
        raise DiagramError(GRAPHVIZ_HINT)
    try:
        result = subprocess.run(
            [program, "-Tsvg"],
            input=dot_source,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DiagramError(f"Graphviz dot could not run: {exc}") from None
    if result.returncode != 0:
        first = (result.stderr.strip().splitlines() or ["no message"])[0]
        raise DiagramError(f"Graphviz dot failed (exit {result.returncode}): {first}")
    return result.stdout


# -- entry points -------------------------------------------------------------------------------


def _check_format(fmt: str, allowed: tuple[str, ...]) -> None:
    if fmt not in allowed:
        raise ValueError(f"unknown diagram format {fmt!r}; use one of: {', '.join(allowed)}")


def render_lifecycle(fmt: str = "mermaid") -> str:
    """The lifecycle diagram as ``mermaid``, ``dot`` or ``svg`` text."""
    _check_format(fmt, FORMATS)
    if fmt == "mermaid":
        return render_mermaid()
    dot = render_dot()
    return dot if fmt == "dot" else render_svg(dot)


def render_run(records: Sequence[AuditRecord], fmt: str, *, run_id: str | None = None) -> str:
    """One run's story from its audit records, as ``mermaid``, ``dot``, ``svg`` or ``timeline``.

    ``records`` are what a store's ``history(run_id)`` or the audit log holds
    (``RunCreated``, ``TransitionEvent``, ``RejectedAttempt``), in any order;
    records of other runs are ignored when ``run_id`` is given. Raises
    ``ReplayError`` when they do not tell one coherent story.
    """
    _check_format(fmt, RUN_FORMATS)
    story = story_of(records, run_id)
    if fmt == "timeline":
        return render_timeline(story)
    if fmt == "mermaid":
        return render_mermaid(story=story)
    dot = render_dot(story=story)
    return dot if fmt == "dot" else render_svg(dot)


def write_all(directory: Path | str, *, svg: bool = True) -> list[Path]:
    """Write ``lifecycle.mmd``, ``lifecycle.dot`` and (``svg=True``) ``lifecycle.svg`` into ``directory``.

    Mermaid and DOT are written first; then SVG, through Graphviz, raising
    ``DiagramError`` if it cannot be drawn (the other two are written by then,
    and an older SVG is left as it was). Returns the paths written.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    dot = render_dot()
    texts = [("mermaid", render_mermaid()), ("dot", dot)]
    written = []
    for fmt, text in texts:
        path = folder / FILE_NAMES[fmt]
        path.write_text(text, encoding="utf-8")
        written.append(path)
    if svg:
        path = folder / FILE_NAMES["svg"]
        path.write_text(render_svg(dot), encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m run_lifecycle.diagrams [DIR]``: regenerate the diagrams (default ``diagrams``)."""
    from .cli import main as cli_main

    args = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: python -m run_lifecycle.diagrams [DIR]  (default: diagrams)"
    if args in (["-h"], ["--help"]):
        print(usage)
        print("Regenerates DIR/lifecycle.mmd, lifecycle.dot and lifecycle.svg from the machine.")
        return 0
    if any(arg.startswith("-") for arg in args) or len(args) > 1:
        print(usage, file=sys.stderr)
        return 2
    return cli_main(["diagram", "--write-all", args[0] if args else "diagrams"])


if __name__ == "__main__":
    sys.exit(main())
