"""`python -m service ...`: see `service/cli/`.

Typed as the docs write it, `python -m service doctor` may run a Python that has none of the project's packages
(the system's, outside `.venv`). That is answered here, with the command to type instead, before any of them is
imported: this module uses the standard library only.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def missing_packages(exc: ModuleNotFoundError) -> str:
    """One line: this Python lacks the project's packages (`exc` names the first), and the command to type."""
    venv_python = PROJECT / ".venv" / "bin" / "python"
    shown = ".venv/bin/python" if Path.cwd().resolve() == PROJECT else str(venv_python)
    command = shlex.join([shown, "-m", "service", *sys.argv[1:]])
    built = "the environment `make setup` built" if venv_python.exists() else "run `make setup` first to build it"
    return f"{sys.executable} is missing callscribe's packages ({exc.name} first): run `{command}` instead ({built})"


def _run() -> int:
    try:
        from service.cli import main  # noqa: PLC0415 - after this module is loaded, so a missing package is answered

        return main()
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.partition(".")[0] == "service":
            raise  # our own module missing is a bug, with its traceback
        sys.stderr.write(missing_packages(exc) + "\n")
        return 1


if __name__ == "__main__":
    sys.exit(_run())
