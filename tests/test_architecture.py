"""The layer contract (DESIGN §2, with the report above the campaign: cli → report → campaign → oed | oracles
→ gmnn → data → base), checked with import-linter; and a contract that is broken is reported as broken."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).parent / "lint-imports"


def lint(src: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT)], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(src), "PATH": str(Path(sys.executable).parent)})


def test_imports_point_one_way():
    assert LINT.exists(), "import-linter is a test dependency (pip install -e '.[dev]')"
    proc = lint(ROOT / "src", ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 kept, 0 broken" in proc.stdout
    assert "cli → report → campaign" in proc.stdout  # the report layer sits between cli and campaign


def test_every_module_of_the_package_is_in_a_layer():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    layered = {name.strip() for layer in config["layers"] for name in layer.replace(":", "|").split("|")}
    package = ROOT / "src" / "oedal"
    modules = {p.stem for p in package.glob("*.py")} | {p.name for p in package.iterdir() if (p / "__init__.py").exists()}
    assert modules - {"__init__", "__main__"} == layered


def test_an_upward_import_breaks_the_contract(tmp_path):
    shutil.copytree(ROOT / "src" / "oedal", tmp_path / "src" / "oedal")
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with open(tmp_path / "src" / "oedal" / "data" / "validate.py", "a") as fh:
        fh.write("\nfrom oedal.gmnn import model  # noqa: the data layer reaching up\n")
    proc = lint(tmp_path / "src", tmp_path)
    assert proc.returncode != 0 and "BROKEN" in proc.stdout
    assert "oedal.data.validate -> oedal.gmnn.model" in proc.stdout


def test_step_functions_fit_on_one_screen():
    """Every function outside the numba kernels is at most 60 lines (STYLE: short typed functions)."""
    import ast

    longest = []
    for path in (ROOT / "src" / "oedal").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if any("njit" in ast.unparse(d) for d in node.decorator_list):
                    continue
                longest.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"))
    too_long = sorted((n, name) for n, name in longest if n > 60)
    assert not too_long, too_long
