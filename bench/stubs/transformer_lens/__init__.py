"Stub of transformer_lens (see bench/stubs/README.md). Only hook_points.HookPoint and HookedRootModule work."
from transformer_lens.HookedTransformer import HookedTransformer  # noqa: F401  (as the real package binds it)
