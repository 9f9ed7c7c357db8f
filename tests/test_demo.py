"""The README's first command: `taskwarden demo` runs every platform end to end and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.timeout(300)
def test_demo_passes_on_every_platform(tmp_path: Path) -> None:
    """The demo's scripted tasks on all six platforms end as scripted, archives verified."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKWARDEN_")}
    done = subprocess.run(
        [sys.executable, "-m", "taskwarden", "demo", "--data-dir", str(tmp_path)],
        env=env | {"TASKWARDEN_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "demo passed" in done.stdout
    for platform in ("geobox", "descarteslabs", "earthone", "up42", "isahit", "http"):
        assert any((tmp_path / "archive" / platform).rglob("manifest.json")), platform
