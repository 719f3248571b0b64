"""The pure modules, as pyproject.toml's `pure` import contract lists them: the one list that the contract, the
coverage floor (`make test` measures exactly these) and the docs' check (`tests/test_architecture.py`) read.

`python -m tests.helpers.architecture` prints pytest-cov's `--cov` options for them.
"""

from __future__ import annotations

import tomllib

from tests.helpers.paths import ROOT


def pure_modules() -> list[str]:
    """The `pure` contract's source modules, dotted (`service.mulaw`)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    [pure] = [c for c in config["tool"]["importlinter"]["contracts"] if c["id"] == "pure"]
    return list(pure["source_modules"])


if __name__ == "__main__":
    print(" ".join(f"--cov={module}" for module in pure_modules()))
