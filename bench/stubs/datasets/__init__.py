"Stub of Hugging Face datasets (see bench/stubs/README.md)."
from _sae_lens_stub import fill

fill(globals(), __name__, ["Array2D", "Dataset", "DatasetDict", "Features", "IterableDataset", "IterableDatasetDict",
                           "Sequence", "Value", "load_dataset"])
