"""The lifecycle drawn from the live machine definition: mermaid and Graphviz DOT.

Nothing here lists an edge. ``lifecycle_graph()`` walks ``MACHINE``'s events
and transitions, and labels each edge with the stop reasons the machine itself
accepts on it (asked through ``decide``) and the guards it carries. The
renderers turn that small model into text, so a change to the definition
changes the diagrams, and the freshness test of ``diagrams/`` notices.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from ._machine import DEFINITION, GUARD_DESCRIPTIONS, MACHINE, STOP_REASON_GUARD, decide
from ._run import TERMINAL_STATUSES, RunStatus, StopReason

__all__ = ["Edge", "Graph", "lifecycle_graph", "render_dot", "render_mermaid"]


@attrs.frozen
class Edge:
    """One transition of the machine: ``source --trigger [guards]--> dest``.

    ``stop_reasons`` are the reasons the machine accepts on this edge (empty
    for triggers that take none); ``guards`` are the state guards beyond the
    stop-reason check (e.g. ``approval_pending``).
    """

    source: str
    dest: str
    trigger: str
    stop_reasons: tuple[str, ...] = ()
    guards: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.source, self.dest, self.trigger)

    @property
    def label(self) -> str:
        parts = [self.trigger]
        if self.stop_reasons:
            parts.append(f"({' | '.join(self.stop_reasons)})")
        if self.guards:
            parts.append(f"[{', '.join(self.guards)}]")
        return " ".join(parts)


@attrs.frozen
class Graph:
    """States (in definition order), the initial state, terminal states and edges."""

    states: tuple[str, ...]
    initial: str
    terminal: frozenset[str]
    edges: tuple[Edge, ...]


def _accepted_reasons(source: str, trigger: str, guards: Iterable[str]) -> tuple[str, ...]:
    # The current stop reason that satisfies the state guards, if any (requires_approval).
    current = StopReason.REQUIRES_APPROVAL if guards else None
    return tuple(
        reason.value
        for reason in StopReason
        if decide(source, current, trigger, reason).outcome == "accept"
    )


def lifecycle_graph() -> Graph:
    """The machine's graph, with edge labels derived from its guards."""
    edges: list[Edge] = []
    for trigger, event in MACHINE.events.items():
        for source, transitions in event.transitions.items():
            for transition in transitions:
                names = [str(condition.func) for condition in transition.conditions]
                state_guards = tuple(name for name in names if name != STOP_REASON_GUARD)
                reasons: tuple[str, ...] = ()
                if STOP_REASON_GUARD in names:
                    reasons = _accepted_reasons(source, trigger, state_guards)
                dest = transition.dest if transition.dest is not None else source
                edges.append(Edge(source, dest, trigger, reasons, state_guards))
    return Graph(
        states=tuple(DEFINITION["states"]),
        initial=str(DEFINITION["initial"]),
        terminal=frozenset(status.value for status in TERMINAL_STATUSES),
        edges=tuple(edges),
    )


def _guard_notes(graph: Graph) -> list[str]:
    used = sorted({guard for edge in graph.edges for guard in edge.guards})
    return [f"{guard}: {GUARD_DESCRIPTIONS.get(guard, guard)}" for guard in used]


def render_mermaid(
    graph: Graph | None = None, *, highlight: Iterable[tuple[str, str, str]] = ()
) -> str:
    """A mermaid ``stateDiagram-v2`` (renders on GitHub); ``highlight`` edges are drawn bold."""
    graph = graph or lifecycle_graph()
    marked = set(highlight)
    lines = ["---", "title: run lifecycle", "---", "stateDiagram-v2"]
    lines.append(f"    [*] --> {graph.initial}")
    for edge in graph.edges:
        lines.append(f"    {edge.source} --> {edge.dest}: {edge.label}")
    for state in graph.states:
        if state in graph.terminal:
            lines.append(f"    {state} --> [*]")
    lines.append("    classDef terminal font-weight:bold,stroke-width:3px")
    terminal = [state for state in graph.states if state in graph.terminal]
    lines.append(f"    class {','.join(terminal)} terminal")
    if marked:
        taken = sorted({state for key in marked for state in key[:2]})
        lines.append("    classDef taken fill:#ffe08a,stroke:#b07d00,stroke-width:3px")
        lines.append(f"    class {','.join(taken)} taken")
    notes = _guard_notes(graph)
    if notes:
        anchor = next(state for state in graph.states if state in graph.terminal)
        lines.append(f"    note right of {anchor}")
        lines.extend(f"        {note}" for note in notes)
        lines.append("    end note")
    return "\n".join(lines) + "\n"


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_dot(
    graph: Graph | None = None, *, highlight: Iterable[tuple[str, str, str]] = ()
) -> str:
    """Graphviz DOT; terminal states are double circles, ``highlight`` edges are bold and coloured."""
    graph = graph or lifecycle_graph()
    marked = set(highlight)
    lines = [
        "digraph run_lifecycle {",
        '    graph [rankdir=LR, label="run lifecycle", labelloc=t, fontname="Helvetica"];',
        '    node [shape=circle, fontname="Helvetica"];',
        '    edge [fontname="Helvetica", fontsize=10];',
        '    __start__ [shape=point, width=0.2, label=""];',
    ]
    for state in graph.states:
        shape = "doublecircle" if state in graph.terminal else "circle"
        lines.append(f"    {state} [shape={shape}];")
    lines.append(f"    __start__ -> {graph.initial};")
    for edge in graph.edges:
        attrs_ = [f"label={_dot_quote(edge.label)}"]
        if edge.key in marked:
            attrs_ += ["color=darkorange", "penwidth=3", "fontcolor=darkorange"]
        lines.append(f"    {edge.source} -> {edge.dest} [{', '.join(attrs_)}];")
    notes = _guard_notes(graph)
    if notes:
        text = "\\l".join(note.replace('"', "'") for note in notes) + "\\l"
        lines.append(f'    __guards__ [shape=note, label="{text}", fontsize=10];')
    lines.append("}")
    return "\n".join(lines) + "\n"


#: The statuses in definition order, for callers that lay out their own pictures.
STATES: tuple[str, ...] = tuple(status.value for status in RunStatus)
