from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_learning_core_imports_without_django() -> None:
    code = (
        "import sys, simapp.learning; sys.exit(1 if any(m.startswith('django') for m in sys.modules) else 0)"
    )

    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)

    assert done.returncode == 0, done.stderr
