"""Stub of wandb (see bench/stubs/README.md). sae_lens only does `import wandb` at module level; SAETrainerConfig's
default logger has log_to_wandb=False, so the benchmark never reaches wandb.log / wandb.Histogram."""


def __getattr__(name):
    if name.startswith("__"): raise AttributeError(name)
    raise NotImplementedError(f"wandb.{name}: wandb is a stub (bench/stubs); it is not installed on this machine")
