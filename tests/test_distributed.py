"""One population across processes (numpyro_dilation.distributed), on this
machine: 2 processes with 2 CPU devices each against 1 process with 4, each a
JAX cluster of its own with its coordinator on 127.0.0.1, started with the
command-line launcher (``python -m numpyro_dilation.distributed``, which calls
distributed.launch).

JAX fixes its devices when it starts, so every run is a fresh Python process.
"""

import json
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from numpyro_dilation import distributed

# One xdist worker runs all of this file's tests (pyproject.toml: --dist
# loadgroup), so its module-scoped fixture (runs) is built once.
pytestmark = pytest.mark.xdist_group("test_distributed")

WORKER = r"""
import json
from numpyro_dilation import distributed

distributed.initialize(initialization_timeout=120, heartbeat_timeout=60)

import jax

print("DEVICES", jax.process_index(), jax.process_count(), jax.device_count())

jax.config.update("jax_enable_x64", True)
import arviz as az
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC

from numpyro_dilation import DilationKernel
from numpyro_dilation.validation import targets


def gaussian():
    loc = numpyro.sample("loc", dist.Normal(jnp.zeros(3), 2.0).to_event(1))
    scale = numpyro.sample("scale", dist.LogNormal(0.0, 0.5))
    numpyro.sample("obs", dist.Normal(loc.sum(), scale), obs=1.0)


two_modes = targets.as_numpyro_model(targets.two_unequal_modes(4))
out = {"process_count": jax.process_count(), "device_count": jax.device_count()}
# The unimodal run takes the default move (HMC here: one mode, a dense
# preconditioner); the two modes MALA's, which the default also moves them
# with after the annealing ("auto" would compile the annealing loop with HMC's
# options as well, for the same collectives).
for name, model, step in (
    ("unimodal", gaussian, "auto"),
    ("multimodal", two_modes, "mala"),
):
    mcmc = MCMC(
        DilationKernel(model, step=step),
        num_warmup=100,
        num_samples=20,
        num_chains=512,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(0), extra_fields=("accept_prob",))
    local = distributed.collect(mcmc)
    whole = distributed.collect(mcmc, gather=True)
    index = distributed.process_particles(mcmc)
    draws = whole.get_samples(group_by_chain=True)
    draws = {k: np.asarray(v) for k, v in draws.items()}
    mine = local.get_samples(group_by_chain=True)
    accept = whole.get_extra_fields(group_by_chain=True)["accept_prob"]
    out[name] = {
        "draws": {k: v.tolist() for k, v in draws.items()},
        "accept": np.asarray(accept).tolist(),
        "local_chains": int(local.num_chains),
        "local_is_its_slice": all(
            np.array_equal(np.asarray(mine[k]), v[index]) for k, v in draws.items()
        ),
        "num_modes": int(mcmc.last_state.sampler_state.modes.num_modes),
    }
    # ArviZ on either collection, log likelihood too: in process 0, whose
    # result is read (no collective to join).
    if name == "unimodal" and jax.process_index() == 0:
        for label, run in (("local", local), ("whole", whole)):
            data = az.from_numpyro(run, log_likelihood=True)
            out[name][f"arviz_{label}"] = [
                list(data.posterior["loc"].shape),
                list(data.log_likelihood["obs"].shape),
            ]
if jax.process_index() == 0:
    print("RESULT " + json.dumps(out))
"""


def _run(tmp_path, num_processes, devices_per_process):
    """Process 0's result of the worker on a cluster of ``num_processes``,
    started with the command-line launcher, and every process's line on its
    devices as the launcher printed it."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    command = [sys.executable, "-m", "numpyro_dilation.distributed"]
    command += ["--processes", str(num_processes)]
    command += ["--devices-per-process", str(devices_per_process)]
    command += ["--timeout", "500", str(script)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    results = [ln for ln in lines if ln.startswith("[0] RESULT ")]
    assert results, out.stderr[-3000:]
    result = json.loads(results[-1][len("[0] RESULT ") :])
    result["devices_lines"] = [ln for ln in lines if " DEVICES " in ln]
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distributed")
    return _run(tmp, 2, 2), _run(tmp, 1, 4)


def test_two_processes_form_one_cluster_of_four_devices(runs):
    two, one = runs
    assert (two["process_count"], two["device_count"]) == (2, 4)
    assert (one["process_count"], one["device_count"]) == (1, 4)


@pytest.mark.parametrize("name", ["unimodal", "multimodal"])
def test_same_draws_as_one_process_with_as_many_devices(runs, name):
    # float64: both runs compile the same program over 4 devices; only the
    # order of the sums in the cross-process all-reduces may differ (~1e-16
    # relative), which stays far below 1e-9 through 120 iterations, while one
    # accept decision or resampling choice that differed would move a draw by
    # O(step size) ~ 0.1 or by the distance between the modes (~2).
    two, one = runs
    for site, draws in two[name]["draws"].items():
        a, b = np.asarray(draws), np.asarray(one[name]["draws"][site])
        assert a.shape == b.shape
        assert np.max(np.abs(a)) > 0.5
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9, err_msg=site)
    np.testing.assert_allclose(
        two[name]["accept"], one[name]["accept"], rtol=0, atol=1e-9
    )


@pytest.mark.parametrize("name", ["unimodal", "multimodal"])
def test_each_process_holds_its_half_of_the_particles(runs, name):
    two, one = runs
    assert two[name]["local_chains"] == 256 and two[name]["local_is_its_slice"]
    assert one[name]["local_chains"] == 512 and one[name]["local_is_its_slice"]


def test_arviz_reads_either_collection(runs):
    two, _ = runs
    assert two["unimodal"]["arviz_local"] == [[256, 20, 3], [256, 20]]
    assert two["unimodal"]["arviz_whole"] == [[512, 20, 3], [512, 20]]


def test_mode_weights_across_processes(runs):
    # targets.two_unequal_modes(4): the heavy mode (weight 2/3) is the one
    # nearer 1 + 1/3 on every coordinate. Standard error from the 512 particles'
    # own shares (each a time average over its 20 draws, particles independent
    # given the frozen mixture): 4 standard errors of that mean.
    two, _ = runs
    x = np.asarray(two["multimodal"]["draws"]["x"])  # (512, 20, 4)
    heavy = (x.mean(-1) > 1 / 3).mean(axis=1)
    assert two["multimodal"]["num_modes"] == 2
    assert two["unimodal"]["num_modes"] == 1  # the one-mode path
    se = heavy.std(ddof=1) / np.sqrt(heavy.size)
    assert abs(heavy.mean() - 2 / 3) < 4 * max(se, 1e-3), (heavy.mean(), se)


def test_a_process_that_does_not_start_gives_a_clear_error(tmp_path):
    # One process of two starts: it waits initialization_timeout seconds for
    # the other, says which is missing and how to fix it, and JAX ends it.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    script = tmp_path / "alone.py"
    script.write_text(
        "from numpyro_dilation import distributed\n"
        f"distributed.initialize({address!r}, 2, 0, initialization_timeout=2)\n"
    )
    start = time.monotonic()
    with pytest.raises(RuntimeError) as err:
        distributed.launch([sys.executable, str(script)], 1, 1, timeout=120)
    assert time.monotonic() - start < 100
    message = str(err.value)
    assert "process 0 of 1 ended with exit code" in message
    assert "for all 2 processes to register" in message
    assert "Start every process with the same coordinator_address" in message


def test_command_line_launcher_prefixes_each_process_output(runs):
    # Every process of the worker prints its index, the process count and the
    # device count; the launcher prefixes each line with the process's index
    # (gloo's own lines come in between).
    two, one = runs
    assert two["devices_lines"] == ["[0] DEVICES 0 2 4", "[1] DEVICES 1 2 4"]
    assert one["devices_lines"] == ["[0] DEVICES 0 1 4"]


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="process_id must be in 0..1"):
        distributed.initialize("127.0.0.1:1234", 2, 2)
    with pytest.raises(ValueError, match="num_processes must be at least 1"):
        distributed.initialize("127.0.0.1:1234", 0, 0)
    with pytest.raises(ValueError, match="initialization_timeout must be"):
        distributed.initialize("127.0.0.1:1234", 1, 0, initialization_timeout=0)
    with pytest.raises(ValueError, match="collect needs a finished run"):
        distributed.collect(type("Unrun", (), {"_states": None})())
