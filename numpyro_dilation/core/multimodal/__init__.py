"""Several modes: the mixture fitted to the population (``mixture_fit``), its
modes (``modes``), exact jumps between them (``jumps``) and the correction of
their masses (``rebalancing``). Pure JAX, as the rest of ``core``."""
