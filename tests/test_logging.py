"""structlog: events are emitted under ``run_lifecycle`` only when the application asks for them."""

from __future__ import annotations

import contextlib
import subprocess
import sys

from structlog.testing import capture_logs

from run_lifecycle import Lifecycle, ManualClock


def test_events_reach_structlog_when_it_is_configured() -> None:
    """With structlog configured (capture_logs does), each transition is one log entry."""
    lc = Lifecycle(clock=ManualClock())
    with capture_logs() as logs:
        run = lc.start(lc.create(agent_id="agent-1"))
        lc.complete(run)
    names = [entry["event"] for entry in logs]
    assert names == ["run.created", "run.transition", "run.transition"]
    assert logs[-1]["to_status"] == "completed" and logs[-1]["seq"] == 2


def test_rejections_are_logged_as_warnings() -> None:
    """A refused trigger is logged at warning level with its reason."""
    lc = Lifecycle(clock=ManualClock())
    run = lc.create(agent_id="a")
    with capture_logs() as logs, contextlib.suppress(Exception):
        lc.complete(run)
    assert logs[-1]["event"] == "run.transition_rejected"
    assert logs[-1]["log_level"] == "warning"


def test_an_explicit_logger_always_receives_events() -> None:
    """A logger handed to Lifecycle gets events whether or not structlog is configured."""
    seen: list[str] = []

    class Recorder:
        def info(self, event: str, **_: object) -> None:
            seen.append(event)

        def warning(self, event: str, **_: object) -> None:
            seen.append(event)

    lc = Lifecycle(clock=ManualClock(), logger=Recorder())
    lc.start(lc.create(agent_id="a"))
    assert seen == ["run.created", "run.transition"]


def test_an_unconfigured_application_sees_no_output() -> None:
    """Without structlog.configure(), creating and finishing runs prints nothing at all."""
    code = (
        "from run_lifecycle import Lifecycle\n"
        "lc = Lifecycle()\n"
        "r = lc.complete(lc.first_token(lc.start(lc.create(agent_id='a'))))\n"
        "try:\n    lc.cancel(r)\nexcept Exception:\n    pass\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert (result.stdout, result.stderr) == ("", "")
