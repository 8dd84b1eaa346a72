"""The documentation site builds with warnings as errors."""

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
    for name in ["DilationKernel", "compare", "write_figures", "forty_mode_mixture"]:
        assert name in api
    assert (tmp_path / "site" / "img" / "dilation_path.png").is_file()


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
