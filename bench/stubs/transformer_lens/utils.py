"Stub (see bench/stubs/README.md)."
from _sae_lens_stub import fill

USE_DEFAULT_VALUE = None  # a plain default-argument sentinel in transformer_lens too
fill(globals(), __name__, ["get_tokens_with_bos_removed", "lm_cross_entropy_loss"])
