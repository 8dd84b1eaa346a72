"""Every example runs as a script (``__main__``), with a small budget and no
network: one process for all of them, so that JAX and NumPyro load once."""

import runpy
import socket
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TINY = ["--num-warmup", "40", "--num-samples", "10", "--num-particles", "64"]


def _refuse(*args, **kwargs):
    raise OSError("network access is not allowed in the examples")


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails, so a download fails the test."""
    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(socket, "create_connection", _refuse)


def test_no_network_fixture_refuses_connections(no_network):
    import urllib.request

    with pytest.raises(OSError, match="network access is not allowed"):
        urllib.request.urlopen("http://127.0.0.1:9")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("eight_schools", "error in sds"),
        ("gaussian_mixture", "share of draws with locs[0] < locs[1]"),
        ("logistic_regression", "training accuracy"),
        ("funnel", "P(x0 < -3)"),
        ("robust_regression", "smallest draws of sigma and nu"),
    ],
)
def test_example_runs_as_a_script(name, expected, no_network, monkeypatch, capsys):
    path = EXAMPLES / f"{name}.py"
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setattr(sys, "argv", [str(path), *TINY])
    runpy.run_path(str(path), run_name="__main__")
    assert expected in capsys.readouterr().out
