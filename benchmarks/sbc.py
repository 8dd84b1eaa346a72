"""Thorough simulation-based calibration of DilationKernel
(numpyro_dilation.validation.sbc).

    PYTHONPATH=$PWD python benchmarks/sbc.py [--replications 200] [--warmup 500]

For each model (normal-normal, hierarchical, logistic regression, ordered
mixture): R replications stacked in one run, ranks of the true values among the
final particles, Pearson's chi-square on equal rank bins per scalar parameter.
A parameter fails when its p-value is below 0.01 / K, K the number of scalar
parameters over all models (Bonferroni: a 1% false-alarm probability for the
whole benchmark). Prints a markdown table and writes one rank-histogram figure
per model to docs/img/sbc_<model><suffix>.png, with the 99% band of a bin's count under
uniform ranks (binomial, Bonferroni over the bins of a panel).
"""

import argparse
import time
import warnings
from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402

from numpyro_dilation.diagnostics import DilationWarning  # noqa: E402
from numpyro_dilation.validation import sbc  # noqa: E402

ALPHA = 0.01


def components(ranks: dict[str, np.ndarray]):
    for site, r in ranks.items():
        for j in range(r.shape[1]):
            yield (site if r.shape[1] == 1 else f"{site}[{j}]"), r[:, j]


def plot(name, ranks, args, path: Path) -> None:
    panels = list(components(ranks))
    cols = min(len(panels), 5)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.6 * cols, 2.0 * rows), squeeze=False, sharey=True
    )
    expected = args.replications / args.bins
    band = scipy.stats.binom(args.replications, 1 / args.bins).ppf(
        [ALPHA / (2 * args.bins), 1 - ALPHA / (2 * args.bins)]
    )
    for ax, (label, r) in zip(axes.flat, panels, strict=False):
        counts = sbc.rank_counts(r, args.particles, args.bins)
        ax.axhspan(*band, color="0.85")
        ax.axhline(expected, color="0.5", lw=0.8)
        ax.bar(np.arange(args.bins), counts, width=0.9, color="C0")
        p = sbc.chi_square(r, args.particles, args.bins)[1]
        ax.set_title(f"{label}  p={p:.2g}", fontsize=8)
        ax.set_xticks([])
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    fig.suptitle(
        f"SBC rank histograms: {name} (R={args.replications}, "
        f"L={args.particles}, {args.bins} bins; grey: 99% band)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=200)
    parser.add_argument("--particles", type=int, default=255)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--bins", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="*", default=list(sbc.CASES))
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--suffix", default="", help="appended to figure names")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(
        f"R={args.replications} particles={args.particles} warmup={args.warmup} "
        f"bins={args.bins} seed={args.seed}, jax {jax.__version__} on "
        f"{jax.devices()[0].platform}\n"
    )
    results, notes = {}, []
    for name in args.models:
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DilationWarning)
            results[name] = sbc.simulate_ranks(
                sbc.CASES[name],
                jax.random.PRNGKey(args.seed),
                args.replications,
                args.particles,
                args.warmup,
            )
            jax.effects_barrier()
        seconds = time.perf_counter() - start
        notes += [
            f"{name}: {w.message}" for w in caught if w.category is DilationWarning
        ]
        notes.append(f"{name}: {seconds:.0f} s")
        plot(name, results[name], args, args.out / f"sbc_{name}{args.suffix}.png")
    k = sum(len(list(components(r))) for r in results.values())
    threshold = ALPHA / k
    print(
        f"| model | parameter | chi-square ({args.bins - 1} dof) | p-value | verdict |"
    )
    print("|---|---|---|---|---|")
    for name, ranks in results.items():
        for label, r in components(ranks):
            stat, p = sbc.chi_square(r, args.particles, args.bins)
            verdict = "pass" if p >= threshold else "**fail**"
            print(f"| {name} | {label} | {stat:.1f} | {p:.3g} | {verdict} |")
    print(f"\nthreshold p < {threshold:.2g} (0.01 / {k} parameters)\n")
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
