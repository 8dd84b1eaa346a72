"""One population across processes (numpyro_dilation.distributed), on this
machine: 2 processes with 2 CPU devices each, a JAX cluster with its
coordinator on 127.0.0.1 (distributed.launch), against the same runs made by
the test process on its one device (tests/distributed_runs.py).

JAX fixes its devices when it starts, so the cluster's processes are fresh
Python processes.
"""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from distributed_runs import RUNS, run

from numpyro_dilation import distributed

WORKER = r"""
import json
import sys
from numpyro_dilation import distributed

distributed.initialize(initialization_timeout=120, heartbeat_timeout=60)

import jax

jax.config.update("jax_enable_x64", True)
import arviz as az
import numpy as np

sys.path.insert(0, {tests!r})
from distributed_runs import RUNS, run

out = {{"process_count": jax.process_count(), "device_count": jax.device_count()}}
for name in RUNS:
    mcmc = run(name)
    local = distributed.collect(mcmc)
    whole = distributed.collect(mcmc, gather=True)
    index = distributed.process_particles(mcmc)
    draws = whole.get_samples(group_by_chain=True)
    draws = {{k: np.asarray(v) for k, v in draws.items()}}
    mine = local.get_samples(group_by_chain=True)
    accept = whole.get_extra_fields(group_by_chain=True)["accept_prob"]
    out[name] = {{
        "draws": {{k: v.tolist() for k, v in draws.items()}},
        "accept": np.asarray(accept).tolist(),
        "local_chains": int(local.num_chains),
        "local_is_its_slice": all(
            np.array_equal(np.asarray(mine[k]), v[index]) for k, v in draws.items()
        ),
        "num_modes": int(mcmc.last_state.sampler_state.modes.num_modes),
    }}
    if name == "unimodal":  # ArviZ on either collection, log likelihood too
        for label, collection in (("local", local), ("whole", whole)):
            data = az.from_numpyro(collection, log_likelihood=True)
            out[name][f"arviz_{{label}}"] = [
                list(data.posterior["loc"].shape),
                list(data.log_likelihood["obs"].shape),
            ]
if jax.process_index() == 0:
    print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """What process 0 of 2 (2 devices each) reports of the runs."""
    script = tmp_path_factory.mktemp("distributed") / "worker.py"
    script.write_text(WORKER.format(tests=str(Path(__file__).parent)))
    results = distributed.launch([sys.executable, str(script)], 2, 2, 500)
    lines = [ln for ln in results[0].stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, results[0].stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.fixture(scope="module")
def single():
    """The same runs in this process, on one device, in float64 as the cluster's."""
    out = {}
    with jax.enable_x64(True):
        for name in RUNS:
            mcmc = run(name)
            out[name] = {
                "draws": {
                    k: np.asarray(v)
                    for k, v in mcmc.get_samples(group_by_chain=True).items()
                },
                "accept": np.asarray(
                    mcmc.get_extra_fields(group_by_chain=True)["accept_prob"]
                ),
            }
    return out


def test_two_processes_form_one_cluster_of_four_devices(cluster):
    assert (cluster["process_count"], cluster["device_count"]) == (2, 4)


@pytest.mark.parametrize("name", list(RUNS))
def test_same_draws_as_one_process_on_one_device(cluster, single, name):
    # float64: the programs differ only in where the population's sums are
    # taken (per device, then all-reduced across devices and processes), which
    # changes their rounding (~1e-16 relative). MALA's draws keep that below
    # 1e-9 through 120 iterations (also tests/core/test_sharding.py, 4 devices
    # in one process against one); HMC's trajectories amplify it (measured:
    # at most 2.3e-8 on the unimodal run, 1e-8 on jax 0.10). One accept decision, number of
    # leapfrog steps or resampling choice that differed would move a draw by
    # O(step size) ~ 0.1 or by the distance between the modes (~2): 1e-6
    # tells the two apart with orders of magnitude to spare on both sides.
    atol = {"unimodal": 1e-6, "multimodal": 1e-9}[name]
    for site, draws in cluster[name]["draws"].items():
        a, b = np.asarray(draws), single[name]["draws"][site]
        assert a.shape == b.shape
        assert np.max(np.abs(a)) > 0.5
        np.testing.assert_allclose(a, b, rtol=0, atol=atol, err_msg=site)
    np.testing.assert_allclose(
        cluster[name]["accept"], single[name]["accept"], rtol=0, atol=atol
    )


@pytest.mark.parametrize("name", list(RUNS))
def test_each_process_holds_its_half_of_the_particles(cluster, name):
    assert cluster[name]["local_chains"] == 256 and cluster[name]["local_is_its_slice"]


def test_arviz_reads_either_collection(cluster):
    assert cluster["unimodal"]["arviz_local"] == [[256, 20, 3], [256, 20]]
    assert cluster["unimodal"]["arviz_whole"] == [[512, 20, 3], [512, 20]]


def test_mode_weights_across_processes(cluster):
    # targets.two_unequal_modes(4): the heavy mode (weight 2/3) is the one
    # nearer 1 + 1/3 on every coordinate. Standard error from the 512 particles'
    # own shares (each a time average over its 20 draws, particles independent
    # given the frozen mixture): 4 standard errors of that mean.
    x = np.asarray(cluster["multimodal"]["draws"]["x"])  # (512, 20, 4)
    heavy = (x.mean(-1) > 1 / 3).mean(axis=1)
    assert cluster["multimodal"]["num_modes"] == 2
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
        f"distributed.initialize({address!r}, 2, 0, initialization_timeout=5)\n"
    )
    start = time.monotonic()
    with pytest.raises(RuntimeError) as err:
        distributed.launch([sys.executable, str(script)], 1, 1, timeout=120)
    assert time.monotonic() - start < 100
    message = str(err.value)
    assert "process 0 of 1 ended with exit code" in message
    assert "for all 2 processes to register" in message
    assert "Start every process with the same coordinator_address" in message


def test_command_line_launcher_prefixes_each_process_output(tmp_path):
    script = tmp_path / "hello.py"
    script.write_text(
        "from numpyro_dilation import distributed\n"
        "distributed.initialize(initialization_timeout=60)\n"
        "import jax\n"
        "print(jax.process_index(), jax.process_count(), jax.device_count())\n"
    )
    command = [sys.executable, "-m", "numpyro_dilation.distributed"]
    command += ["--processes", "2", "--devices-per-process", "3", str(script)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines() == ["[0] 0 2 6", "[1] 1 2 6"]


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="process_id must be in 0..1"):
        distributed.initialize("127.0.0.1:1234", 2, 2)
    with pytest.raises(ValueError, match="num_processes must be at least 1"):
        distributed.initialize("127.0.0.1:1234", 0, 0)
    with pytest.raises(ValueError, match="initialization_timeout must be"):
        distributed.initialize("127.0.0.1:1234", 1, 0, initialization_timeout=0)
    with pytest.raises(ValueError, match="collect needs a finished run"):
        distributed.collect(type("Unrun", (), {"_states": None})())
