"""docs/architecture.md against the code: every module is in its package's table, and what it marks pure is the
`pure` contract's list (pyproject.toml), the one list the contract and the coverage floor read too."""

from __future__ import annotations

import re

from tests.helpers.architecture import pure_modules
from tests.helpers.paths import ROOT

PACKAGE = re.compile(r"^`([a-z_/]+)/`[^|]*:|^Root modules \(`service/`\):")
ROW = re.compile(r"^\| `([a-z_0-9]+\.py)`[^|]* \| (.*) \|$")  # `x.py` (and maybe its files) | its job |


def documented() -> dict[str, str]:
    """Each module the doc's tables describe (dotted), with its description."""
    modules: dict[str, str] = {}
    package = None
    for line in (ROOT / "docs" / "architecture.md").read_text().splitlines():
        if match := PACKAGE.match(line):
            package = "service" + ("." + match[1].replace("/", ".") if match[1] else "")
        elif (match := ROW.match(line)) and package is not None and match[1] != "__init__.py":
            modules[f"{package}.{match[1].removesuffix('.py')}"] = match[2]
    return modules


def test_the_docs_mark_pure_exactly_the_contracts_pure_modules() -> None:
    marked = {module for module, job in documented().items() if "(pure" in job}
    assert marked == set(pure_modules())


def test_every_module_of_the_service_is_documented() -> None:
    """A module added without a line in its package's table fails here (migrations aside: they are numbered)."""
    present = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for path in (ROOT / "service").rglob("*.py")
        if path.name != "__init__.py" and "migrations" not in path.parts
    }
    assert present - set(documented()) == set()
    assert set(documented()) - present == set()
