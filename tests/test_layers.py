"""The package's layers, read from its imports (static: ``ast``).

core (pure JAX) <- adapter (NumPyro kernel, diagnostics) <- validation <- tools.
A module may import its own layer and those below it, never one above; the
core imports neither NumPyro nor any plotting or table library.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "numpyro_dilation"
LAYERS = {
    "core": 0,
    "kernel": 1,
    "distributed": 1,
    "diagnostics": 1,
    "mode_report": 1,
    "nested_rhat": 3,
    "validation": 2,
    "arviz_compat": 3,
    "compare": 3,
    "compile_timer": 3,
    "compile_cache": 3,
    "plots": 3,
    "cli": 3,
}
FOREIGN_TO_CORE = {"numpyro", "arviz", "arviz_base", "matplotlib", "pandas"}


def _layer(module: str) -> int:
    """Layer of ``numpyro_dilation.<a>.<b>...`` (the package itself: the top)."""
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else max(LAYERS.values()) + 1


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append((".".join(parts), path))
    return out


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_every_module_has_a_layer():
    for name, _ in _modules():
        if name != "numpyro_dilation":
            assert name.split(".")[1] in LAYERS, f"{name}: add it to LAYERS"


@pytest.mark.parametrize("name, path", _modules(), ids=lambda v: str(v))
def test_imports_only_its_own_layer_and_below(name, path):
    if name == "numpyro_dilation":
        return
    own = _layer(name)
    for imported in _imports(path):
        top = imported.split(".")[0]
        if own == 0:
            assert top not in FOREIGN_TO_CORE, f"{name} (core) imports {imported}"
        if top == "numpyro_dilation" and imported.count(".") >= 1:
            if imported.split(".")[1] in LAYERS:
                assert _layer(imported) <= own, f"{name} imports {imported}"


def test_the_check_sees_a_forbidden_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import numpyro.infer\nfrom numpyro_dilation.compare import x\n")
    assert {"numpyro.infer", "numpyro_dilation.compare"} <= _imports(bad)
    assert _layer("numpyro_dilation.compare") > _layer("numpyro_dilation.core.sampler")
