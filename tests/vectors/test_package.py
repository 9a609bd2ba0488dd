"""simapp.vectors stays a Django-free core: it may import the standard library, numpy, qdrant-client,
qdrant-edge-py and itself, nothing else (checked on the source, so no import side effect can hide it)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "simapp" / "vectors"
ALLOWED = {"numpy", "qdrant_client", "qdrant_edge"}


def test_imports_only_numpy_and_qdrant() -> None:
    offending = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                ours = module == "simapp.vectors" or module.startswith("simapp.vectors.")
                if not (ours or top in ALLOWED or top in sys.stdlib_module_names or top == "__future__"):
                    offending.append(f"{path.name}: {module}")
    assert offending == []
