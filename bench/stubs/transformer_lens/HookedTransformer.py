"Stub (see bench/stubs/README.md)."
from _sae_lens_stub import fill
from transformer_lens.hook_points import HookedRootModule  # noqa: F401

fill(globals(), __name__, ["HookedTransformer", "Loss", "Output"])
