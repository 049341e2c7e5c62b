"""The generated resource reference matches the schemas in the code."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_resource_reference_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "resource_docs.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
