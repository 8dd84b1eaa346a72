"""Schedules of dilation levels ``0 < l_0 <= l_1 <= ... <= l_{K-1} = 1``.

The default is geometric, ``l_k = l_min^(1 - k/(K-1))``: by the scale invariance
of the path (docs/design.md section 2) a Langevin step of size ``eps * l`` on ``p_l`` is
a step of size ``eps`` on ``p`` in target coordinates, and moving from ``l_k`` to
``l_{k+1}`` pulls every particle towards its centre by ``sqrt(l_k / l_{k+1})``;
a geometric schedule makes that pull the same at every level.
"""

from collections.abc import Callable

import numpy as np

__all__ = ["geometric", "make_levels", "ScheduleLike"]

ScheduleLike = str | Callable[[np.ndarray], np.ndarray] | np.ndarray | list
"""What :func:`make_levels` accepts as ``schedule``."""


def geometric(num_levels: int, lambda_min: float) -> np.ndarray:
    """``l_k = l_min^(1 - k/(K-1))`` for ``k = 0..K-1`` (a single level is ``[1]``).

    Host-side (NumPy), like every level schedule: the levels are data of the
    run's calendar, computed once before anything is compiled.
    """
    if num_levels == 1:
        return np.ones(1)
    u = np.linspace(0.0, 1.0, num_levels)
    return np.float64(lambda_min) ** (1.0 - u)


def make_levels(
    schedule: ScheduleLike, num_levels: int, lambda_min: float
) -> np.ndarray:
    """Levels from ``"geometric"``, a callable ``u -> l(u)`` on ``u`` in [0, 1], or
    an explicit increasing array ending at 1.

    Raises ``ValueError`` naming ``schedule`` when the levels are not in (0, 1],
    not non-decreasing, or do not end at 1.
    """
    if isinstance(schedule, str):
        if schedule != "geometric":
            raise ValueError(
                f"schedule={schedule!r} is not known: use 'geometric', a callable "
                "u -> l(u) on [0, 1], or an increasing array of levels ending at 1."
            )
        if not 0.0 < lambda_min <= 1.0:
            raise ValueError(f"lambda_min must be in (0, 1], got {lambda_min}.")
        return geometric(num_levels, lambda_min)
    if callable(schedule):
        levels = np.asarray(schedule(np.linspace(0.0, 1.0, num_levels)), float)
    else:
        levels = np.asarray(schedule, float)
    levels = np.atleast_1d(levels)
    if levels.ndim != 1 or levels.size == 0:
        raise ValueError("schedule must give a 1-D, non-empty array of levels.")
    if not np.all(np.isfinite(levels)) or np.any(levels <= 0) or np.any(levels > 1):
        raise ValueError("schedule levels must all be in (0, 1].")
    if np.any(np.diff(levels) < 0):
        raise ValueError("schedule levels must be non-decreasing.")
    if levels[-1] != 1.0:
        raise ValueError(
            f"schedule must end at l = 1 (the target), got {levels[-1]}; "
            "append 1.0 to the levels."
        )
    return levels
