"""The documentation site builds with warnings as errors, its API reference
covers every module, and every repository path named in the code, tests and
pages exists."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config)]
        + ["-d", str(site)],
        capture_output=True,
        text=True,
        cwd=config.parent,
    )


def test_docs_build_strictly(tmp_path):
    result = mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in [
        "DilationKernel",
        "compare",
        "write_figures",
        "forty_mode_mixture",
        "mode_summary",
        "ModeSummary",
        "check_run",
        "DilationWarning",
    ]:
        assert name in api
    assert (tmp_path / "site" / "img" / "dilation_path.png").is_file()


def test_api_reference_covers_every_module():
    api = (ROOT / "docs" / "api.md").read_text()
    modules = [
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for path in sorted((ROOT / "numpyro_dilation").rglob("*.py"))
        if not path.name.startswith("_")
    ]
    assert "numpyro_dilation.core.multimodal.jumps" in modules
    assert [m for m in modules if f"::: {m}\n" not in api] == []


def test_strict_build_fails_on_a_broken_link(tmp_path):
    # The same site with one link to a missing page must not build: strict
    # mode is what turns the warning into an error.
    copy = tmp_path / "repo"
    for name in ["docs", "benchmarks", "numpyro_dilation"]:
        shutil.copytree(ROOT / name, copy / name)
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    page = copy / "docs" / "index.md"
    page.write_text(page.read_text() + "\n[broken](no-such-page.md)\n")
    result = mkdocs_build(copy / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert "no-such-page.md" in result.stderr


# A repository path in a docstring, comment or page: a page of docs/ or a Python
# file of the package, tests, benchmarks or examples, with an optional
# ``::test_name`` suffix (not part of the path). The look-behind keeps the tail
# of a longer path (``/elsewhere/docs/x.md``) from counting.
PATH_TOKEN = re.compile(
    r"(?<![\w/.-])"
    r"(docs/[\w/.-]*\.md|(?:numpyro_dilation|tests|benchmarks|examples)/[\w/.-]*\.py)"
    r"(?:::\w+)?"
)
SCANNED = (
    "numpyro_dilation/**/*.py",
    "tests/**/*.py",
    "benchmarks/*.py",
    "examples/*.py",
    "docs/*.md",
    "README.md",
)


def named_paths() -> dict[str, list[str]]:
    """Each path named in a scanned file, with the ``file:line`` places naming it."""
    places: dict[str, list[str]] = {}
    for pattern in SCANNED:
        for file in sorted(ROOT.glob(pattern)):
            lines = file.read_text().splitlines()
            for number, line in enumerate(lines, 1):
                for path in PATH_TOKEN.findall(line):
                    where = f"{file.relative_to(ROOT)}:{number}"
                    places.setdefault(path, []).append(where)
    return places


def test_path_token_finds_paths_and_drops_test_names():
    text = (
        "see tests/test_docs.py::test_docs_build_strictly, docs/design.md section 2"
        " and /elsewhere/docs/" + "x.md"
    )
    assert PATH_TOKEN.findall(text) == ["tests/test_docs.py", "docs/design.md"]


def test_every_named_repository_path_exists():
    places = named_paths()
    # Known citations, so that a scanner that finds nothing cannot pass.
    cited = places["tests/core/test_cpu_lapack.py"]
    assert any(where.startswith("docs/known-issues.md:") for where in cited)
    assert "docs/design.md" in places
    missing = {
        path: where for path, where in places.items() if not (ROOT / path).is_file()
    }
    assert not missing, missing
