"""The public API: ``run_lifecycle.__all__`` is sorted, complete and importable."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import run_lifecycle


def test_all_is_sorted_and_unique() -> None:
    """__all__ is sorted (case-sensitively, as ruff's RUF022 wants) with no repeats."""
    names = list(run_lifecycle.__all__)
    assert len(set(names)) == len(names)
    assert names == sorted(names, key=lambda n: (not n.isupper(), n)) or names == sorted(names)


def test_every_exported_name_resolves() -> None:
    """Every name in __all__ is an attribute of the package."""
    for name in run_lifecycle.__all__:
        assert getattr(run_lifecycle, name) is not None, name


def test_every_public_name_of_the_private_modules_is_exported() -> None:
    """What a private module lists in its __all__ as public API is re-exported by the package."""
    internal_only = {
        "run_lifecycle._machine": {
            "DEFAULT_STOP_REASON",
            "DEFINITION",
            "GUARD_DESCRIPTIONS",
            "MACHINE",
            "Decision",
            "build_machine",
            "decide",
            "live_decide",
        },
        "run_lifecycle._validate": None,  # helpers, not API
        "run_lifecycle._demo": None,
        "run_lifecycle._receiver": None,  # the demo's flaky receiver
        "run_lifecycle._run_story": None,  # public through run_lifecycle.diagrams
        "run_lifecycle._timeline": None,  # public through run_lifecycle.diagrams
        "run_lifecycle._callbacks_base": None,  # public through run_lifecycle.callbacks
        "run_lifecycle._run": {"TERMINAL_STATUSES"},
    }
    for info in pkgutil.iter_modules(run_lifecycle.__path__, "run_lifecycle."):
        if not info.name.split(".")[-1].startswith("_") or info.name.endswith("__main__"):
            continue
        skip = internal_only.get(info.name, set())
        if skip is None:
            continue
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", []):
            if name in skip:
                continue
            assert name in run_lifecycle.__all__, f"{info.name}.{name} is not exported"


def test_exceptions_share_one_base() -> None:
    """Every exception class exported derives from RunLifecycleError."""
    from run_lifecycle import exceptions

    for name in exceptions.__all__:
        assert issubclass(getattr(exceptions, name), run_lifecycle.RunLifecycleError)


def test_core_imports_without_any_extra() -> None:
    """import run_lifecycle works when sqlalchemy, httpx, psycopg and rich are unavailable."""
    blocked = ["sqlalchemy", "httpx", "psycopg", "rich", "standardwebhooks", "aiosqlite"]
    code = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None\n"
        "import run_lifecycle\n"
        "from run_lifecycle import Lifecycle\n"
        "lc = Lifecycle(); lc.complete(lc.start(lc.create(agent_id='a')))\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
