"""Every benchmark script imports: its imports of the package and of its
sibling scripts (``from hmc import side_by_side``) still resolve.

Nothing in the suite runs the benchmarks (they take minutes to hours); a
renamed or removed function that a script uses would otherwise go unseen
until someone runs it. Importing runs no benchmark: each script's work is
under ``if __name__ == "__main__"``.
"""

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py"))
OPTIONAL = {"blackjax"}  # the bench extra's, not the test extra's


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_benchmark_script_imports(path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"_bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as err:
        if err.name not in OPTIONAL:
            raise
        pytest.skip(f"{path.name} needs {err.name} (pip install -e '.[bench]')")
    assert callable(getattr(module, "main", None)) or path.stem == "ceiling"


def test_every_script_is_found():
    # An empty glob (a moved folder) would leave the test above with no cases.
    assert BENCHMARKS / "hmc.py" in SCRIPTS and BENCHMARKS / "run.py" in SCRIPTS
