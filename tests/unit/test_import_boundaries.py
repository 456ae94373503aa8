"""Tests and benchmarks don't import each other; what both need lives in devkit/, which imports
neither.  Imports are read with ast (every `import` and `from ... import`, also inside functions),
so a lazy import counts as much as a top-level one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: folder -> the top-level packages its files must not import
FORBIDDEN = {"tests": {"bench"}, "bench": {"tests"}, "devkit": {"tests", "bench"}}


def imported(path: Path) -> set[str]:
    """The top-level package of every module `path` imports (relative imports excluded)."""
    tops: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            tops.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            tops.add(node.module.split(".")[0])
    return tops


def crossings(folder: str) -> list[str]:
    return sorted(f"{path.relative_to(ROOT)} imports {top}"
                  for path in (ROOT / folder).rglob("*.py")
                  for top in imported(path) & FORBIDDEN[folder])


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_no_file_imports_across_the_tests_bench_boundary(folder):
    assert crossings(folder) == []


def test_the_check_sees_a_lazy_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from bench.faults import run_fault\n    import tests.support.hub\n")
    assert imported(sample) == {"bench", "tests"}


def test_amqp_takes_typed_sections_not_the_whole_config():
    names = sorted(f"{path.relative_to(ROOT)}: {alias.name}"
                   for path in (ROOT / "koji_messagebus" / "amqp").rglob("*.py")
                   for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                   if isinstance(node, ast.ImportFrom) and node.module == "koji_messagebus.config.settings"
                   for alias in node.names if alias.name == "Config")
    assert names == []
