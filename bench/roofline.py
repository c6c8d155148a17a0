"""The hardware's limit that bench/ compares each hot path with: a bf16 matrix-multiply peak measured in the same run,
and the model FLOPs of the computations (only the dense matrix products; element-wise work is not counted)."""
import time

import torch


def matmul_peak(device, n:int=8192, repeats:int=20) -> float:
    "Achieved bf16 FLOP/s of an n×n×n matmul on `device` (the median-free best of `repeats` after a warm-up)."
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16); b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3): a @ b
    best = 0.0
    for _ in range(repeats):
        if device.type == "cuda": torch.cuda.synchronize(device)
        t0 = time.perf_counter(); a @ b
        if device.type == "cuda": torch.cuda.synchronize(device)
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t0))
    return best


def sae_step_flops(batch:int, d_in:int, d_sae:int, auxk:bool) -> float:
    """Dense matmul FLOPs of one TopK SAE training step as `SAETrainer.step` runs it on a GPU: encoder forward and its
    weight gradient (4·B·d·S), the dense decoder forward, its weight and input gradients (6·B·d·S), and with AuxK the
    auxiliary decoder product with the same three (6·B·d·S)."""
    return (10 + 6 * auxk) * batch * d_in * d_sae


def transformer_flops(tokens:int, context:float, n_layers:int, d_model:int, d_ff:int, n_heads:int, n_kv_heads:int,
                      mlp_matrices:int=3) -> float:
    """Forward matmul FLOPs of `tokens` query tokens through `n_layers` transformer layers, each attending to `context`
    keys on average: q/o projections 2·2·d², k/v projections 2·2·d·d_kv, the MLP 2·m·d·d_ff (m = 3 for Llama's gated
    MLP, 2 for CLIP's), and attention scores and values 2·2·context·d per token."""
    d_kv = d_model * n_kv_heads // n_heads
    per_token = 4 * d_model ** 2 + 4 * d_model * d_kv + 2 * mlp_matrices * d_model * d_ff + 4 * context * d_model
    return tokens * n_layers * per_token
