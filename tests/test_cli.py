"""The ``numpyro-dilation`` command: demo, compare on a user's file, --help."""

import argparse
import importlib.metadata
import shutil
import subprocess
import textwrap

import pandas as pd
import pytest

from numpyro_dilation.cli import build_parser, main

MODEL_FILE = textwrap.dedent(
    """
    import numpy as np
    import numpyro
    import numpyro.distributions as dist

    MODES = np.array([[-1.0], [1.0]])


    def model(y, scale=1.0):
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        numpyro.sample("y", dist.Normal(mu, scale), obs=y)


    def data():
        return {"y": np.array([0.5, 1.5, 1.0]), "scale": 2.0}
    """
)


def test_demo_quick_prints_tables_and_writes_figures(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    for name in ["forty_modes", "eight_schools"]:
        assert f"=== {name} ===" in out
        folder = tmp_path / name
        for stem in ["forest", "trace_NUTS", "trace_DilationKernel", "pair"]:
            assert (folder / f"{stem}.png").stat().st_size > 0
        table = pd.read_csv(folder / "table.csv", index_col=0)
        assert list(table.index) == ["NUTS", "DilationKernel"]
        assert table.loc["DilationKernel", "chains"] == 256
    assert (tmp_path / "forty_modes" / "density.png").is_file()
    assert not (tmp_path / "eight_schools" / "density.png").exists()
    mode_table = pd.read_csv(tmp_path / "forty_modes" / "mode_weights.csv")
    assert len(mode_table) == 40
    assert "mode shares" in out and "ess_bulk_min" in out
    # progress: a line before and after every run, on stderr
    assert err.count("compilation") == 4


def test_compare_a_user_model_file(tmp_path, capsys):
    path = tmp_path / "my_model.py"
    path.write_text(MODEL_FILE)
    argv = ["compare", f"{path}:model", "--data", "data", "--modes", "MODES"]
    argv += ["--quick", "--num-particles", "32", "--no-figures"]
    assert main(argv + ["--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "=== my_model ===" in out
    table = pd.read_csv(tmp_path / "out" / "my_model" / "table.csv", index_col=0)
    assert table.loc["DilationKernel", "chains"] == 32
    assert table.loc["NUTS", "modes_found"] >= 1
    assert not list((tmp_path / "out" / "my_model").glob("*.png"))


@pytest.mark.parametrize(
    "target, message",
    [
        ("no_colon", "MODULE:MODEL"),
        ("missing_file.py:model", "No such model file"),
        ("my_model.py:nothing", "no attribute 'nothing'"),
        ("my_model.py:MODES", "not a function"),
    ],
)
def test_compare_bad_targets_exit_with_a_message(
    tmp_path, monkeypatch, capsys, target, message
):
    (tmp_path / "my_model.py").write_text(MODEL_FILE)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", target])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def _all_actions(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_actions(sub)
        else:
            yield action


def test_help_explains_every_option():
    undocumented = [
        action.dest for action in _all_actions(build_parser()) if not action.help
    ]
    assert undocumented == []


def test_installed_command():
    scripts = importlib.metadata.entry_points(group="console_scripts")
    assert scripts["numpyro-dilation"].value == "numpyro_dilation.cli:main"
    command = shutil.which("numpyro-dilation")
    assert command, "numpyro-dilation is not on PATH: pip install -e ."
    result = subprocess.run(
        [command, "compare", "--help"], capture_output=True, text=True, check=True
    )
    assert "--num-particles" in result.stdout and "MODULE:MODEL" in result.stdout
