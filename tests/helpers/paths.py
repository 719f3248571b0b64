"""Where the checkout's files are, for tests that read or run them."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
SAMPLES = ROOT / "service" / "simulator" / "samples"
GOLDEN = ROOT / "tests" / "helpers" / "golden"
