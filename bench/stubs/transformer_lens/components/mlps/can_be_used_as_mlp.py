"Stub (see bench/stubs/README.md)."
from _sae_lens_stub import fill

fill(globals(), __name__, ["CanBeUsedAsMLP"])
