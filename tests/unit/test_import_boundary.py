"""edge_runtime is the dependency-light kernel: it imports no TensorFlow, converter or fleet_server."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import edge_runtime

FORBIDDEN = (
    "tensorflow",
    "tf2onnx",
    "keras",
    "converter",
    "fleet_server",
    "edgefleet",
    "sqlalchemy",
    "fastapi",
    "amqtt",
)
PACKAGE = Path(edge_runtime.__file__).parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", None) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(str(node.args[0].value))
    return names


def test_no_forbidden_import_statement_anywhere_in_edge_runtime() -> None:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) >= 5
    offenders = {
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in sources
        for name in imported_modules(path)
        if name.split(".")[0] in FORBIDDEN
    }
    assert not offenders, offenders


def test_importing_every_module_loads_no_forbidden_package() -> None:
    modules = sorted(
        ".".join(("edge_runtime", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(
            ".__init__"
        )
        for path in PACKAGE.rglob("*.py")
    )
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(len(sys.modules)); assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_checker_itself_catches_an_offender(tmp_path: Path) -> None:
    offender = tmp_path / "bad.py"
    offender.write_text("import numpy\nfrom tensorflow import lite\nimport fleet_server.db\n")
    assert {"tensorflow", "fleet_server.db"} <= imported_modules(offender)
