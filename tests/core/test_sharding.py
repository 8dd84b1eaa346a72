"""The particle axis sharded over 4 (forced host) devices: the same draws as one
device, population statistics reduced across shards.

JAX fixes its device count when it starts, so the checks run in a fresh Python
process with XLA_FLAGS=--xla_force_host_platform_device_count=4.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# One xdist worker runs all of this file's tests (pyproject.toml: --dist
# loadgroup), so its module-scoped fixture (four_devices) is built once.
pytestmark = pytest.mark.xdist_group("test_sharding")

SCRIPT = r"""
import json, re, warnings
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC
from numpyro_dilation import DilationKernel
from numpyro_dilation import core
from numpyro_dilation.core.sharding import particle_sharding, shard_particles


def model():
    loc = numpyro.sample("loc", dist.Normal(jnp.zeros(3), 2.0).to_event(1))
    scale = numpyro.sample("scale", dist.LogNormal(0.0, 0.5))
    numpyro.sample("obs", dist.Normal(loc.sum(), scale), obs=1.0)


runs = {}
for shard in (False, None):
    mcmc = MCMC(
        DilationKernel(model, shard_particles=shard, step="mala"),
        num_warmup=100,
        num_samples=50,
        num_chains=64,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(0), extra_fields=("accept_prob",))
    runs[shard] = mcmc

one, four = runs[False], runs[None]
pop_one, pop_four = one.last_state.sampler_state, four.last_state.sampler_state


def max_diff(a, b):
    return max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


out = {
    "num_devices": jax.device_count(),
    "position_devices": len(pop_four.particles.position.sharding.device_set),
    "position_replicated": pop_four.particles.position.sharding.is_fully_replicated,
    "draws_devices": len(four.get_samples()["loc"].sharding.device_set),
    "draws_replicated": four.get_samples()["loc"].sharding.is_fully_replicated,
    "one_device_devices": len(pop_one.particles.position.sharding.device_set),
    "draws_diff": max_diff(one.get_samples(), four.get_samples()),
    "accept_diff": max_diff(
        one.get_extra_fields()["accept_prob"], four.get_extra_fields()["accept_prob"]
    ),
    "inv_mass_diff": max_diff(pop_one.inv_mass, pop_four.inv_mass),
    "log_step_size_diff": max_diff(
        pop_one.step_size.log_step_size, pop_four.step_size.log_step_size
    ),
    "draws_scale": float(np.max(np.abs(np.asarray(one.get_samples()["loc"])))),
}

# shard_particles: the particles split, the rest replicated, also the modes,
# whose leading axis (min(max_modes, n) = 8) has as many entries as particles.
fn = jax.value_and_grad(lambda x: -jnp.sum(x**2))
state = core.init(jnp.zeros((8, 3)), fn, core.build_calendar(10))
placed = shard_particles(state, particle_sharding(8))
out["helper"] = [
    placed.particles.position.sharding.is_fully_replicated,
    placed.inv_mass.sharding.is_fully_replicated,
    placed.modes.log_mass.sharding.is_fully_replicated,
    len(placed.particles.position.sharding.device_set),
]
out["uneven_is_none"] = particle_sharding(62) is None

# 62 particles do not split over 4 devices: a warning (auto) or an error (True).
# Both come before the warmup, so one warmup iteration is enough (its warning
# that the warmup is short is left out by the filter on the text below).
keys = jax.random.split(jax.random.PRNGKey(1), 62)
init = jnp.zeros((62, 2))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    DilationKernel(potential_fn=lambda x: jnp.sum(x**2)).init(keys, 1, init)
messages = [str(w.message) for w in caught]
out["uneven_warning"] = [m for m in messages if "split evenly" in m]
try:
    DilationKernel(potential_fn=lambda x: jnp.sum(x**2), shard_particles=True).init(
        keys, 1, init
    )
    out["uneven_error"] = None
except ValueError as err:
    out["uneven_error"] = str(err)

# A mode fit on a split population: reductions only, nothing of the
# population's size gathered (k-means++ seeds by Gumbel-max and a masked sum).
from numpyro_dilation.core.multimodal import modes

x = jax.random.normal(jax.random.PRNGKey(2), (64, 3))
x = jax.device_put(x, particle_sharding(64))
x = x + 4.0 * jnp.sign(x[:, :1])
logdensity = -0.5 * jnp.sum(x**2, axis=1)
fit = jax.jit(lambda k, x, ld: modes.find_modes(k, x, ld, fn, 8)[1])
compiled = fit.lower(jax.random.PRNGKey(3), x, logdensity).compile().as_text()
out["mode_fit_gathered"] = [
    shape
    for shape in re.findall(r"= ([^ ]+) all-gather", compiled)
    if re.search(r"[\[,]64[\],]", shape)
]
out["mode_fit_labels_diff"] = max_diff(
    fit(jax.random.PRNGKey(3), x, logdensity),
    fit(jax.random.PRNGKey(3), jax.device_get(x), jax.device_get(logdensity)),
)
# The preconditioner's moments of a split population and the step size's
# acceptance sums (HMC's: 3 columns): one all-reduce, diagonal or dense.
from numpyro_dilation.core import adaptation

accept = jax.nn.sigmoid(x[:, 0])
terms = adaptation.acceptance_terms(accept, accept < 0.1, None, harmonic=True)
out["moments_collectives"] = {}
out["acceptance_sums_diff"] = []
for dense in (False, True):
    moments = jax.jit(adaptation.population_moments, static_argnums=2)
    text = moments.lower(x, jnp.zeros(3), dense, terms).compile().as_text()
    out["moments_collectives"][str(dense)] = re.findall(
        r"= (\S+) (all-reduce|all-gather|all-to-all|collective-permute)\(", text
    )
    sums = moments(x, jnp.zeros(3), dense, terms)[2]
    direct = jnp.sum(jax.device_get(terms), 0)
    out["acceptance_sums_diff"].append(max_diff(sums, direct))
# A sampling iteration of a split population (everything frozen, each
# particle moved with its own draws): no collective at all, MALA or HMC.
from numpyro_dilation.core import sampler

out["sampling_collectives"] = {}
keys = sampler.iteration_keys(jax.random.PRNGKey(4))[1]
for hmc in (False, True):
    options = core.SamplerOptions()._replace(hmc=hmc)
    step = jax.jit(lambda k, s: sampler.sample_step(k, s, fn, options)[0])
    text = step.lower(keys, placed).compile().as_text()
    out["sampling_collectives"][str(hmc)] = re.findall(
        r"= (\S+) (all-reduce|all-gather|all-to-all|collective-permute)", text
    )


# The collectives of a compiled program's entry computation (not those of its
# conditional branches, which run at some iterations only), each operand's
# shape without its layout.
def every_iteration(text):
    entry = text[text.index("\nENTRY ") :]
    entry = entry[: entry.index("\n}")]
    operands = re.findall(
        r"= (\([^=]*?\)|\S+) (?:all-reduce|all-gather|all-to-all|"
        r"collective-permute)\(",
        entry,
    )
    return sorted(s for o in operands for s in re.findall(r"\w+\[[\d,]*\]", o))


# The collectives of each branch of each conditional of the entry computation:
# one list of branches per conditional, one sorted list of shapes per branch.
def conditional_branches(text):
    entry = text[text.index("\nENTRY ") :]
    entry = entry[: entry.index("\n}")]
    found = []
    for names in re.findall(r"conditional\(.*branch_computations=\{([^}]*)\}", entry):
        branches = []
        for name in names.split(", "):
            body = re.search(rf"\n{re.escape(name)} [^\n]*\{{\n(.*?)\n\}}", text, re.S)
            branches.append(every_iteration("\nENTRY \n" + body.group(1) + "\n}"))
        found.append(sorted(branches))
    return found


# One HMC iteration per phase (unimodal: no mode fits, jumps, rebalancing).
hmc_options = sampler.unimodal(core.SamplerOptions()._replace(hmc=True))
out["hmc_collectives"] = {}
for phase in (sampler.ANNEAL, sampler.TUNE):
    step = jax.jit(
        lambda k, s, phase=phase: sampler.step_from_keys(
            k, s, fn, hmc_options, phase=phase
        )[0]
    )
    text = step.lower(keys, placed).compile().as_text()
    out["hmc_collectives"][phase] = every_iteration(text)
    out["hmc_collectives"][phase + " branches"] = conditional_branches(text)
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def four_devices():
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    count = "--xla_force_host_platform_device_count=4"
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {count}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(root)] + [p for p in [env.get("PYTHONPATH")] if p]
    )
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


def test_particles_are_split_over_the_devices(four_devices):
    out = four_devices
    assert out["num_devices"] == 4
    assert out["position_devices"] == 4 and not out["position_replicated"]
    assert out["draws_devices"] == 4 and not out["draws_replicated"]
    assert out["one_device_devices"] == 1  # shard_particles=False


def test_same_draws_as_one_device(four_devices):
    # float64, MALA moves: the only difference is the order of the sums in the
    # all-reduces (mean acceptance, population variance), ~1e-16 relative;
    # through 150 iterations it stays many orders of magnitude below 1e-9. A
    # particle whose accept decision differed would differ by O(step) ~ 0.1.
    # (HMC's trajectories carry that rounding further, 2e-8 here; HMC runs over
    # the same four devices are compared in tests/test_distributed.py.)
    out = four_devices
    assert out["draws_scale"] > 1.0
    assert out["draws_diff"] < 1e-9
    assert out["accept_diff"] < 1e-9


def test_population_statistics_span_all_shards(four_devices):
    # The preconditioner and step size are those of the whole population: a
    # per-shard estimate (16 particles each) would differ at the 10% level.
    out = four_devices
    assert out["inv_mass_diff"] < 1e-12
    assert out["log_step_size_diff"] < 1e-12


def test_shard_particles_helper(four_devices):
    assert four_devices["helper"] == [False, True, True, 4]
    assert four_devices["uneven_is_none"]


def test_uneven_split_warns_or_raises(four_devices):
    assert len(four_devices["uneven_warning"]) == 1
    assert "multiple of 4" in four_devices["uneven_warning"][0]
    assert "shard_particles=True" in four_devices["uneven_error"]


def test_preconditioner_moments_and_acceptance_are_one_all_reduce(four_devices):
    # mean and (co)variance from one sum over the particles, with the step
    # size's 3 acceptance columns: d + d + 3 floats diagonal, (d + 1 + 3)^2
    # dense (d = 3), nothing else communicated; the sums are the columns'.
    collectives = four_devices["moments_collectives"]
    assert collectives["False"] == [["f64[9]{0}", "all-reduce"]]
    assert collectives["True"] == [["f64[7,7]{1,0}", "all-reduce"]]
    assert max(four_devices["acceptance_sums_diff"]) < 1e-12


def test_a_mode_fit_reduces_and_gathers_nothing_particle_sized(four_devices):
    # Indexing a split population (x[i]) gathers all of it on every device;
    # the mode fit's k-means seeding picks its rows by reductions instead.
    assert four_devices["mode_fit_gathered"] == []
    assert four_devices["mode_fit_labels_diff"] == 0


def test_a_sampling_iteration_communicates_nothing(four_devices):
    # Its random draws too: the noise and accept uniforms are drawn row by row
    # (core.draws.normal_and_uniform), so each device draws its own particles'.
    assert four_devices["sampling_collectives"] == {"False": [], "True": []}


def test_an_hmc_iteration_reduces_one_array_per_dependent_sum(four_devices):
    # XLA's CPU runtime reduces each operand of an all-reduce in a collective
    # call of its own (each paying the latency between processes), so sums
    # that can go together are one array. Every iteration (d = 3, float64,
    # diagonal): annealing, the mean acceptance alone (HMC's harmonic mean is
    # the tuning's); tuning, the length floor's sums with ChEES's weighted
    # endpoints (2 d + 1 + d + 1), then ChEES's mean gradient (a scalar), and
    # in a conditional (the preconditioner is estimated in the first half of
    # tuning only) either the moments with the acceptance's 3 columns (2 d +
    # 3) or the acceptance's 3 columns alone.
    collectives = four_devices["hmc_collectives"]
    assert collectives["anneal"] == ["f64[1]"]
    assert collectives["tune"] == ["f64[11]", "f64[]"]
    assert [["f64[3]"], ["f64[9]"]] in collectives["tune branches"]
