"""The diagrams: derived from the machine, golden, fresh in diagrams/, and true to a run's records.

Golden files live in ``tests/golden/``; after an intended change, regenerate
them with ``RUN_LIFECYCLE_UPDATE_GOLDEN=1 pytest tests/test_diagrams.py`` and
review the diff. ``diagrams/`` is regenerated with
``run-lifecycle diagram --write-all diagrams/``.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from run_lifecycle import (
    DiagramError,
    Lifecycle,
    ManualClock,
    RejectedAttempt,
    ReplayError,
    RunCreated,
    RunLifecycleError,
    RunStatus,
    StopReason,
    TransitionEvent,
)
from run_lifecycle._events import AuditRecord
from run_lifecycle._machine import STOP_REASON_TRIGGERS, decide, decision_space
from run_lifecycle.diagrams import (
    FILE_NAMES,
    MERMAID_INLINE_REASONS,
    dot_program,
    lifecycle_graph,
    render_dot,
    render_lifecycle,
    render_mermaid,
    render_run,
    render_svg,
    story_of,
    write_all,
)

from .strategies import steps

ROOT = Path(__file__).resolve().parent.parent
DIAGRAMS = ROOT / "diagrams"
GOLDEN = Path(__file__).resolve().parent / "golden"
STATES = [status.value for status in RunStatus]
RUN_ID = "run-3f2a0c1e-1111-4222-8333-444455556666"
UPDATE_GOLDEN = os.environ.get("RUN_LIFECYCLE_UPDATE_GOLDEN") == "1"


class ListSink(list[AuditRecord]):
    """An audit sink that keeps every record in memory, in order."""

    def write(self, record: AuditRecord) -> None:
        self.append(record)


def drive(actions: Iterable[tuple[str, Any, Any]], *, run_id: str = RUN_ID) -> ListSink:
    """Records of one run driven by ``actions`` (triggers and clock moves) on a manual clock."""
    sink = ListSink()
    clock = ManualClock()
    lc = Lifecycle(clock=clock, audit=sink)
    run = lc.create(agent_id="agent-1", id=run_id)
    for kind, value, reason in actions:
        if kind == "advance":
            clock.advance(value)
        elif kind == "step_wall":
            clock.step_wall(value)
        else:
            with contextlib.suppress(RunLifecycleError):
                run = lc.apply(run, value, stop_reason=reason)[0]
    return sink


def approval_denied() -> ListSink:
    """A run that asked for approval, was refused it (cancelled), and got a late complete."""
    return drive(
        [
            ("advance", 0.012, None),
            ("trigger", "start", None),
            ("advance", 0.412, None),
            ("trigger", "first_token", None),
            ("advance", 1.7, None),
            ("trigger", "complete", StopReason.REQUIRES_APPROVAL),
            ("advance", 0.5, None),
            ("trigger", "complete", StopReason.END_TURN),  # rejected: it is already completed
            ("advance", 3.0, None),
            ("trigger", "cancel", None),
            ("advance", 0.1, None),
            ("trigger", "complete", None),  # rejected: it was cancelled
        ]
    )


# -- parsing what we render -------------------------------------------------------------------

_DOT_EDGE = re.compile(r"^    (\w+) -> (\w+)(?: \[(.*)\])?;$")
_DOT_ATTR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^,\s]+)')


def dot_edges(dot: str) -> list[tuple[str, str, dict[str, str]]]:
    """Every ``a -> b [attrs]`` line of a DOT text, with its attributes unquoted."""
    edges = []
    for line in dot.splitlines():
        match = _DOT_EDGE.match(line)
        if match:
            attrs_ = {k: v.strip('"') for k, v in _DOT_ATTR.findall(match.group(3) or "")}
            edges.append((match.group(1), match.group(2), attrs_))
    return edges


def dot_state_edges(dot: str) -> dict[tuple[str, str, str], dict[str, str]]:
    """The lifecycle's edges in a DOT text, keyed ``(source, dest, trigger)``."""
    found = {}
    for source, dest, attrs_ in dot_edges(dot):
        if source in STATES and dest in STATES:
            trigger = attrs_["id"].removeprefix(f"edge_{source}_{dest}_")
            found[(source, dest, trigger)] = attrs_
    return found


#: Each line of our mermaid state diagrams, in the conservative subset GitHub renders.
_MERMAID_STATE_LINE = re.compile(
    r"^(stateDiagram-v2"
    r"|    \[\*\] --> \w+"
    r"|    \w+ --> (\w+|\[\*\])(: [^:;#<>\n]+)?"
    r"|    classDef \w+ [\w:#,.-]+"
    r"|    class \w+(,\w+)* \w+"
    r"|    note right of \w+"
    r"|        [^<>#\n]+"
    r"|    end note)$"
)
_MERMAID_GANTT_LINE = re.compile(
    r"^(gantt"
    r"|    title [^:;#\n]+"
    r"|    dateFormat x"
    r"|    axisFormat [%\w:.]+"
    r"|    todayMarker off"
    r"|    %% [^\n]+"
    r"|    section \w+"
    r"|    [^:;#\n]+ :[\w, ]*?\w+, \d+, \d+(\.\d+)?ms)$"
)


def assert_conservative_mermaid(text: str, pattern: re.Pattern[str]) -> None:
    """Every line is in the subset of mermaid we know GitHub renders; notes are one per state."""
    for number, line in enumerate(text.splitlines(), start=1):
        assert pattern.match(line), f"line {number} is outside the safe subset: {line!r}"
    if text.startswith("stateDiagram"):
        notes = re.findall(r"note right of (\w+)", text)
        assert len(notes) == len(set(notes)), "mermaid keeps one note per state"
        closing = re.findall(r"end note", text, re.IGNORECASE)
        assert len(closing) == len(notes), "'end note' inside a note would close it early"


def mermaid_taken(text: str) -> set[tuple[str, str, str]]:
    """The edges a per-run mermaid diagram numbers as steps (``1. start``)."""
    taken = set()
    for match in re.finditer(r"^    (\w+) --> (\w+): [\d, ]+\. (\w+)", text, re.MULTILINE):
        taken.add((match.group(1), match.group(2), match.group(3)))
    return taken


# -- the graph comes from the machine ---------------------------------------------------------


def test_graph_edges_are_exactly_what_the_machine_accepts() -> None:
    """A (status, stop reason, trigger, requested reason) is accepted iff an edge allows it."""
    graph = lifecycle_graph()
    for status, current, trigger, requested in decision_space():
        if requested is not None and trigger not in STOP_REASON_TRIGGERS:
            continue  # apply_trigger refuses a stop reason there before asking the machine
        decision = decide(status, current, trigger, requested)
        allowed = any(
            edge.source == status
            and edge.trigger == trigger
            and (requested.value in edge.stop_reasons if requested else not edge.stop_reasons)
            and (not edge.when_stop_reason or (current and current.value in edge.when_stop_reason))
            for edge in graph.edges
        )
        assert allowed == (decision.outcome == "accept"), (status, current, trigger, requested)


def test_edges_lead_where_the_machine_sends_the_run() -> None:
    """Each edge's destination is the status the machine enters for that edge's reasons."""
    for edge in lifecycle_graph().edges:
        current = StopReason(edge.when_stop_reason[0]) if edge.when_stop_reason else None
        requested = StopReason(edge.stop_reasons[0]) if edge.stop_reasons else None
        decision = decide(edge.source, current, edge.trigger, requested)
        assert (decision.dest or edge.source) == edge.dest


def test_guards_and_effects_are_on_the_labels() -> None:
    """The approval cancel names its condition, first_token its effect, terminals are marked."""
    graph = lifecycle_graph()
    labels = {edge.key: edge.label for edge in graph.edges}
    assert "[if stop_reason is requires_approval]" in labels[("completed", "cancelled", "cancel")]
    assert "sets ttft_ns once" in labels[("running", "running", "first_token")]
    assert graph.terminal == {"completed", "failed", "cancelled"}
    mermaid, dot = render_mermaid(), render_dot()
    for state in graph.terminal:
        assert f"    {state} --> [*]" in mermaid
        assert f"    {state} [shape=doublecircle];" in dot


def test_long_stop_reason_lists_are_summarised_in_mermaid_and_listed_in_a_note() -> None:
    """An edge with many reasons says how many, and a note on its target lists every one."""
    mermaid = render_mermaid()
    notes = dict(re.findall(r"note right of (\w+)\n(.*?)\n    end note", mermaid, re.DOTALL))
    long_edges = [
        e for e in lifecycle_graph().edges if len(e.stop_reasons) > MERMAID_INLINE_REASONS
    ]
    assert long_edges, "the fail edges take more reasons than a label should hold"
    for edge in long_edges:
        line = f"    {edge.source} --> {edge.dest}: {edge.trigger} (any of {len(edge.stop_reasons)}"
        assert line in mermaid
        listed = re.findall(r"^        - (\w+)$", notes[edge.dest], re.MULTILINE)
        assert listed == list(edge.stop_reasons)


def test_lifecycle_mermaid_is_in_the_safe_subset() -> None:
    """The lifecycle mermaid uses only syntax GitHub's renderer accepts."""
    assert_conservative_mermaid(render_mermaid(), _MERMAID_STATE_LINE)


# -- golden files and freshness ---------------------------------------------------------------


def check_golden(name: str, text: str) -> None:
    """``text`` equals ``tests/golden/<name>`` (or rewrites it when updating goldens)."""
    path = GOLDEN / name
    if UPDATE_GOLDEN:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text, f"{name} differs from its golden file"


def test_lifecycle_mermaid_matches_its_golden_file() -> None:
    """The lifecycle mermaid is exactly the reviewed golden text."""
    check_golden("lifecycle.mmd", render_mermaid())


def test_lifecycle_dot_matches_its_golden_file() -> None:
    """The lifecycle DOT is exactly the reviewed golden text."""
    check_golden("lifecycle.dot", render_dot())


@pytest.mark.parametrize(
    ("fmt", "name"),
    [
        ("mermaid", "run_approval_denied.mmd"),
        ("dot", "run_approval_denied.dot"),
        ("timeline", "run_approval_denied.timeline.mmd"),
    ],
)
def test_run_story_matches_its_golden_file(fmt: str, name: str) -> None:
    """An approval-denied run with two late completes renders exactly as reviewed."""
    check_golden(name, render_run(approval_denied(), fmt))


@pytest.mark.parametrize("fmt", ["mermaid", "dot"])
def test_checked_in_diagram_is_fresh(fmt: str) -> None:
    """diagrams/ holds what the code draws now (regenerate: run-lifecycle diagram --write-all diagrams/)."""
    path = DIAGRAMS / FILE_NAMES[fmt]
    assert path.read_text(encoding="utf-8") == render_lifecycle(fmt), (
        f"{path.name} is stale: run `run-lifecycle diagram --write-all diagrams/`"
    )


def test_checked_in_svg_draws_every_state_and_edge() -> None:
    """diagrams/lifecycle.svg exists and names every state and every edge of the machine."""
    svg = (DIAGRAMS / FILE_NAMES["svg"]).read_text(encoding="utf-8")
    assert svg.lstrip().startswith("<?xml")
    titles = set(re.findall(r"<title>(.*?)</title>", svg))
    for state in STATES:
        assert state in titles
    for edge in lifecycle_graph().edges:
        assert f"{edge.source}&#45;&gt;{edge.dest}" in titles


def _graphviz_version(svg: str) -> str | None:
    match = re.search(r"Generated by graphviz version (\S+)", svg)
    return match.group(1) if match else None


def test_checked_in_svg_is_what_dot_draws_from_the_checked_in_dot() -> None:
    """lifecycle.svg equals a fresh `dot -Tsvg` of lifecycle.dot (same Graphviz: byte for byte)."""
    if dot_program() is None:
        if os.environ.get("CI"):
            pytest.fail("Graphviz's dot is missing in CI: .ci/run must install graphviz")
        pytest.skip("Graphviz's dot is not installed here (apt-get install graphviz)")
    checked_in = (DIAGRAMS / FILE_NAMES["svg"]).read_text(encoding="utf-8")
    fresh = render_svg((DIAGRAMS / FILE_NAMES["dot"]).read_text(encoding="utf-8"))
    if _graphviz_version(fresh) == _graphviz_version(checked_in):
        assert fresh == checked_in, (
            "lifecycle.svg is stale: run-lifecycle diagram --write-all diagrams/"
        )
    else:  # another Graphviz lays out differently; what it draws must still be the same

        def drawn(svg: str) -> tuple[set[str], set[str]]:
            return set(re.findall(r"<title>(.*?)</title>", svg)), set(
                re.findall(r"<text[^>]*>(.*?)</text>", svg)
            )

        assert drawn(fresh) == drawn(checked_in), "lifecycle.svg is stale"


def test_readme_shows_the_generated_mermaid() -> None:
    """README's diagram section holds diagrams/lifecycle.mmd verbatim and shows the SVG."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("<!-- section:diagram -->")[1].split("<!-- /section:diagram -->")[0]
    block = re.search(r"```mermaid\n(.*?)```", section, re.DOTALL)
    assert block is not None
    assert block.group(1) == (DIAGRAMS / FILE_NAMES["mermaid"]).read_text(encoding="utf-8")
    assert "diagrams/lifecycle.svg" in section


# -- SVG and the files ------------------------------------------------------------------------

needs_dot = pytest.mark.skipif(
    dot_program() is None and not os.environ.get("CI"),
    reason="Graphviz's dot is not installed here (apt-get install graphviz)",
)


@needs_dot
def test_svg_of_the_lifecycle_names_every_state() -> None:
    """render_lifecycle('svg') is an SVG document with a node per state."""
    svg = render_lifecycle("svg")
    assert "<svg" in svg
    for state in STATES:
        assert f"<title>{state}</title>" in svg


def test_svg_without_graphviz_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With no dot on PATH, SVG raises DiagramError naming the package to install."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DiagramError, match="apt-get install graphviz"):
        render_lifecycle("svg")


@needs_dot
def test_dot_that_graphviz_rejects_is_a_diagram_error() -> None:
    """A DOT text Graphviz cannot parse raises DiagramError with dot's own first line."""
    with pytest.raises(DiagramError, match="Graphviz dot failed"):
        render_svg("digraph {")


@needs_dot
def test_write_all_writes_the_three_files(tmp_path: Path) -> None:
    """write_all puts lifecycle.mmd, .dot and .svg into the directory, creating it."""
    target = tmp_path / "out" / "diagrams"
    written = write_all(target)
    assert sorted(p.name for p in written) == sorted(FILE_NAMES.values())
    assert (target / "lifecycle.mmd").read_text(encoding="utf-8") == render_mermaid()
    assert (target / "lifecycle.dot").read_text(encoding="utf-8") == render_dot()


def test_write_all_without_svg_writes_mermaid_and_dot_only(tmp_path: Path) -> None:
    """write_all(svg=False) needs no Graphviz and writes the two text diagrams."""
    written = write_all(tmp_path, svg=False)
    assert sorted(p.name for p in written) == ["lifecycle.dot", "lifecycle.mmd"]
    assert not (tmp_path / "lifecycle.svg").exists()


def test_unknown_format_is_refused() -> None:
    """A format nobody draws is a ValueError that lists the formats."""
    with pytest.raises(ValueError, match="mermaid, dot, svg"):
        render_lifecycle("png")
    with pytest.raises(ValueError, match="timeline"):
        render_run(approval_denied(), "png")


@needs_dot
def test_python_m_run_lifecycle_diagrams_regenerates_a_directory(tmp_path: Path) -> None:
    """`python -m run_lifecycle.diagrams DIR` writes the three files."""
    result = subprocess.run(
        [sys.executable, "-m", "run_lifecycle.diagrams", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILE_NAMES.values())


# -- one run's story --------------------------------------------------------------------------

lives = st.lists(steps, max_size=25)


@given(lives)
def test_run_dot_highlights_exactly_the_edges_in_the_runs_events(actions: list[Any]) -> None:
    """In a run's DOT, the bold edges are exactly its events' edges, and each rejection is drawn."""
    records = drive(actions)
    events = [r for r in records if isinstance(r, TransitionEvent)]
    rejected = [r for r in records if isinstance(r, RejectedAttempt)]
    dot = render_run(records, "dot")
    edges = dot_state_edges(dot)
    assert set(edges) == {edge.key for edge in lifecycle_graph().edges}
    bold = {key for key, attrs_ in edges.items() if attrs_.get("penwidth") == "3"}
    assert bold == {(e.from_status, e.to_status, e.trigger) for e in events}
    for key in bold:
        steps_drawn = re.findall(r"step (\d+) at", edges[key]["label"])
        expected = [str(e.seq) for e in events if (e.from_status, e.to_status, e.trigger) == key]
        assert steps_drawn == expected
    drawn_rejections = [
        (source, attrs_)
        for source, dest, attrs_ in dot_edges(dot)
        if dest.startswith("__rejected_")
    ]
    assert sorted(source for source, _ in drawn_rejections) == sorted(r.status for r in rejected)
    assert all(a["style"] == "dashed" for _, a in drawn_rejections)


@given(lives)
def test_run_mermaid_numbers_exactly_the_edges_in_the_runs_events(actions: list[Any]) -> None:
    """In a run's mermaid, the numbered edges are its events' edges; rejections are in notes."""
    records = drive(actions)
    events = [r for r in records if isinstance(r, TransitionEvent)]
    rejected = [r for r in records if isinstance(r, RejectedAttempt)]
    text = render_run(records, "mermaid")
    assert_conservative_mermaid(text, _MERMAID_STATE_LINE)
    assert mermaid_taken(text) == {(e.from_status, e.to_status, e.trigger) for e in events}
    assert text.count(" rejected at ") == len(rejected)


@given(lives)
def test_run_timeline_shows_the_measured_durations_and_every_rejection(actions: list[Any]) -> None:
    """The gantt draws ttft_ns and total_duration_ns as recorded, and a red milestone per rejection."""
    records = drive(actions)
    text = render_run(records, "timeline")
    assert_conservative_mermaid(text, _MERMAID_GANTT_LINE)
    story = story_of(records)
    for field in ("ttft_ns", "total_duration_ns"):
        value = story.measured(field)
        lines = [line for line in text.splitlines() if line.startswith(f"    {field} ")]
        if value is None:
            assert lines == []
        else:
            assert len(lines) == 1
            assert lines[0].endswith(f", {value / 1_000_000:.3f}ms")
    rejected = [r for r in records if isinstance(r, RejectedAttempt)]
    assert text.count(":crit, milestone,") == len(rejected)


@given(lives, st.randoms(use_true_random=False))
def test_record_order_does_not_change_the_story(actions: list[Any], rng: random.Random) -> None:
    """Records read out of line order (as several writers leave them) draw the same picture."""
    records = list(drive(actions))
    shuffled = records[:]
    rng.shuffle(shuffled)
    for fmt in ("mermaid", "dot", "timeline"):
        assert render_run(shuffled, fmt) == render_run(records, fmt)


def test_approval_denied_run_highlights_both_terminal_edges() -> None:
    """A run cancelled after requires_approval lights start, first_token, complete and cancel."""
    edges = dot_state_edges(render_run(approval_denied(), "dot"))
    bold = {key for key, attrs_ in edges.items() if attrs_.get("penwidth") == "3"}
    assert bold == {
        ("created", "running", "start"),
        ("running", "running", "first_token"),
        ("running", "completed", "complete"),
        ("completed", "cancelled", "cancel"),
    }


def test_rejection_note_says_what_was_refused_when_and_why() -> None:
    """The late complete after the cancel is shown with its time and the status that refused it."""
    text = render_run(approval_denied(), "mermaid")
    assert "complete rejected at 00:00:05.724 UTC (+5.72 s), run was cancelled" in text
    assert "complete (end_turn) rejected at 00:00:02.624 UTC (+2.62 s), run was completed" in text


def test_story_of_other_runs_records_is_ignored_given_a_run_id() -> None:
    """Records of several runs draw the asked-for run only."""
    other = "run-00000000-0000-4000-8000-00000000beef"
    mixed = [*drive([("trigger", "start", None)], run_id=other), *approval_denied()]
    assert render_run(mixed, "dot", run_id=RUN_ID) == render_run(approval_denied(), "dot")
    with pytest.raises(ReplayError, match="records of 2 runs"):
        render_run(mixed, "dot")


def test_story_of_nothing_is_a_replay_error() -> None:
    """No records at all, or none of the asked-for run, cannot be drawn."""
    with pytest.raises(ReplayError, match="empty"):
        story_of([])
    with pytest.raises(ReplayError, match="no records of run"):
        story_of(approval_denied(), "run-00000000-0000-4000-8000-000000000000")


def test_a_missing_event_is_a_replay_error() -> None:
    """A history with a gap in seq is refused, naming the missing seq."""
    records = [r for r in approval_denied() if not (isinstance(r, TransitionEvent) and r.seq == 2)]
    with pytest.raises(ReplayError, match="seq 2 is missing"):
        render_run(records, "dot")


def test_a_repeated_event_is_a_replay_error() -> None:
    """A history with an event twice is refused."""
    records = list(approval_denied())
    first = next(r for r in records if isinstance(r, TransitionEvent))
    with pytest.raises(ReplayError, match="repeated"):
        render_run([*records, first], "dot")


def test_an_event_that_is_not_an_edge_is_a_replay_error() -> None:
    """An event the machine could not have produced (start into failed) is refused."""
    records = list(approval_denied())
    index = next(i for i, r in enumerate(records) if isinstance(r, TransitionEvent))
    event = records[index]
    assert isinstance(event, TransitionEvent)
    records[index] = attrs.evolve(event, to_status="failed")
    with pytest.raises(ReplayError, match="not a transition of the lifecycle"):
        render_run(records, "mermaid")


def test_an_event_that_does_not_follow_on_is_a_replay_error() -> None:
    """An event starting from another status than the run was in is refused."""
    records = list(approval_denied())
    index = next(i for i, r in enumerate(records) if isinstance(r, TransitionEvent) and r.seq == 3)
    event = records[index]
    assert isinstance(event, TransitionEvent)
    records[index] = attrs.evolve(event, from_status="created", to_status="failed", trigger="fail")
    with pytest.raises(ReplayError, match="starts from created, but the run was running"):
        render_run(records, "timeline")


def test_a_history_without_its_creation_record_still_draws() -> None:
    """A store history that starts after creation draws from its earliest record."""
    records = [r for r in approval_denied() if not isinstance(r, RunCreated)]
    story = story_of(records)
    assert story.created is None
    assert story.created_at == min(r.at for r in records)
    assert "running" in render_run(records, "timeline")


def test_untrusted_agent_ids_cannot_break_the_mermaid() -> None:
    """Agent ids, triggers and stop reasons full of mermaid syntax are neutralised everywhere."""
    sink = ListSink()
    lc = Lifecycle(clock=ManualClock(), audit=sink)
    run = lc.start(lc.create(agent_id="a: b; #c <script>\nend note", id=RUN_ID))
    with contextlib.suppress(RunLifecycleError):
        lc.apply(run, "end note: <b>#1;", stop_reason=None)
    with contextlib.suppress(RunLifecycleError):
        lc.apply(run, "complete", stop_reason="x; end note #2 <i>")
    assert sum(isinstance(r, RejectedAttempt) for r in sink) == 2
    assert_conservative_mermaid(render_run(sink, "mermaid"), _MERMAID_STATE_LINE)
    assert_conservative_mermaid(render_run(sink, "timeline"), _MERMAID_GANTT_LINE)
    if dot_program() is not None:  # and Graphviz parses the DOT they appear in
        assert "</svg>" in render_run(sink, "svg")
