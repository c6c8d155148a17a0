"""SAE training-step throughput: binding_sae's TopK step against a plain dense PyTorch TopK step, in one run.

Usage (GPU machine, torch + CUDA, nothing else needed):
    PYTHONPATH=. python3 bench/bench_sae.py                 # d_in 4096 x 32,768 latents, k 64
    PYTHONPATH=. python3 bench/bench_sae.py --json out.json # also write the numbers
    PYTHONPATH=. python3 bench/bench_sae.py --cpu --small   # a quick check that it runs (CPU, tiny sizes)

Every variant trains on the same random activations already on the device (no host->device copies), with bf16
autocast on CUDA, Adam, gradient clipping and the unit-norm decoder constraint. Tokens/s is the median over
`--repeats` windows of `--steps` steps after `--warmup` steps (torch.compile needs its warm-up). Variants:
  dense          plain PyTorch TopK: dense (B, d_sae) latents, f @ W_dec, autograd everywhere, foreach Adam
  ours           binding_sae.sae.SAETrainer.step: cheap b_dec gradient, fused Adam, TopKSAE.decode_topk
                 (dense bf16 matmul on GPUs, embedding_bag gather on the CPU)
  ours+compile   the same with torch.compile on the loss computation
  ours-dense-dec our step with decode_topk forced to the dense scatter + matmul
  ours-gather    our step with decode_topk forced to an fp32 embedding_bag gather
  ours-gather16  the same gather in the autocast dtype (bf16 backward for per-row weights needs torch > 2.11)
  sae_lens       sae_lens.SAETrainer._train_step on a TopKTrainingSAE (only when sae_lens is importable)
AuxK stays off in every variant: no latent can be dead within a benchmark's few hundred thousand tokens.
"""
import argparse, json, statistics, sys, time, traceback

import torch
import torch.nn.functional as F
from torch import nn

from binding_sae.sae import SAETrainer, TopKSAE, init_from_data, make_sae
from binding_sae.config import SAEConfig, TrainingConfig


def sync(device):
    if device.type == "cuda": torch.cuda.synchronize(device)


class DenseTopK(nn.Module):
    "The plain baseline: what a straightforward PyTorch TopK SAE looks like."
    def __init__(self, d_in, d_sae, k):
        super().__init__()
        W = F.normalize(torch.randn(d_sae, d_in), dim=1)
        self.W_dec, self.W_enc = nn.Parameter(W), nn.Parameter(W.T.clone())
        self.b_enc, self.b_dec = nn.Parameter(torch.zeros(d_sae)), nn.Parameter(torch.zeros(d_in))
        self.k = k

    def loss(self, x):
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        vals, idx = pre.topk(self.k, dim=-1)
        f = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
        return (f @ self.W_dec + self.b_dec - x).pow(2).sum(-1).mean()


def dense_variant(args, device, B):
    model = DenseTopK(args.d_in, args.d_sae, args.k).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    def step(x):
        with amp: loss = model.loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            W = model.W_dec
            W.grad -= (W.grad * W).sum(-1, keepdim=True) * W
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            W /= W.norm(dim=1, keepdim=True)
    return step


class DenseDecodeTopK(TopKSAE):
    "Control: the dense (B, d_sae) @ (d_sae, d_in) TopK decoder on any device."
    def decode_topk(self, vals, idx):
        return torch.zeros(vals.shape[0], self.d_sae, dtype=vals.dtype, device=vals.device).scatter_(-1, idx, vals) @ self.W_dec


class GatherDecodeTopK(TopKSAE):
    "Control: the fp32 embedding_bag gather TopK decoder on any device."
    def decode_topk(self, vals, idx):
        return F.embedding_bag(idx, self.W_dec, per_sample_weights=vals.float(), mode="sum")


class Gather16DecodeTopK(TopKSAE):
    "Control: the embedding_bag gather in the autocast dtype (bf16 rows of W_dec)."
    def decode_topk(self, vals, idx):
        return F.embedding_bag(idx, self.W_dec.to(vals.dtype), per_sample_weights=vals, mode="sum")


def ours_variant(args, device, B, compile=False, cls=None, x0=None):
    sae = cls(args.d_in, args.d_sae, k=args.k) if cls else make_sae("topk", args.d_in, args.d_sae, k=args.k)
    training = TrainingConfig(learning_rate=1e-4, warmup_steps=0, decay_fraction=0.0, dtype="bfloat16")
    trainer = SAETrainer(sae, 10**9, SAEConfig(), training, device=str(device), compile=compile)
    init_from_data(sae, x0)
    return trainer.step


def sae_lens_variant(args, device, B):
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer as LensTrainer
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=args.d_in, d_sae=args.d_sae, k=args.k, device=str(device)))
    cfg = SAETrainerConfig(total_training_samples=10**12, train_batch_size_samples=B, lr=1e-4, lr_end=1e-4, device=str(device),
                           autocast=device.type == "cuda")
    trainer = LensTrainer(cfg=cfg, sae=sae.to(device), data_provider=iter(()))
    return lambda x: trainer._train_step(sae, x)


def measure(step, xs, device, warmup, steps, repeats):
    for i in range(warmup): step(xs[i % len(xs)])
    sync(device)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(steps): step(xs[i % len(xs)])
        sync(device)
        rates.append(steps * xs[0].shape[0] / (time.perf_counter() - t0))
    return statistics.median(rates)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="run on the CPU")
    p.add_argument("--small", action="store_true", help="tiny sizes (d_in 256 x 2048, k 16, batches 512/1024)")
    p.add_argument("--d_in", type=int, default=4096); p.add_argument("--d_sae", type=int, default=32768)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[4096, 16384], help="the first is the reference batch")
    p.add_argument("--steps", type=int, default=30); p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no_compile", action="store_true", help="skip the torch.compile variants")
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 with --cpu, where more threads thrash on busy machines)")
    args = p.parse_args(argv)
    if args.small:
        args.d_in, args.d_sae, args.k, args.batch_sizes = 256, 2048, 16, [512, 1024]
        args.steps, args.warmup, args.repeats = 5, 2, 1
    device = torch.device("cpu" if args.cpu or not torch.cuda.is_available() else "cuda")
    if args.threads or device.type == "cpu": torch.set_num_threads(args.threads or 1)
    if device.type == "cuda": torch.backends.cuda.matmul.allow_tf32 = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}, torch {torch.__version__}, d_in {args.d_in} x d_sae {args.d_sae}, k {args.k}, "
          f"batches {args.batch_sizes}, {args.steps} steps x {args.repeats} after {args.warmup} warm-up", flush=True)
    try: import sae_lens.training.sae_trainer; has_lens = True  # noqa: F401
    except Exception: has_lens = False

    results = []
    for B in args.batch_sizes:
        g = torch.Generator(device="cpu").manual_seed(0)
        xs = [(torch.randn(B, args.d_in, generator=g) + 0.5).to(device) for _ in range(4)]
        variants = [("dense", lambda: dense_variant(args, device, B)),
                    ("ours", lambda: ours_variant(args, device, B, x0=xs[0]))]
        if not args.no_compile: variants.append(("ours+compile", lambda: ours_variant(args, device, B, compile=True, x0=xs[0])))
        variants += [("ours-dense-dec", lambda: ours_variant(args, device, B, cls=DenseDecodeTopK, x0=xs[0])),
                     ("ours-gather", lambda: ours_variant(args, device, B, cls=GatherDecodeTopK, x0=xs[0])),
                     ("ours-gather16", lambda: ours_variant(args, device, B, cls=Gather16DecodeTopK, x0=xs[0]))]
        if has_lens: variants.append(("sae_lens", lambda: sae_lens_variant(args, device, B)))
        for vname, make in variants:
            row = {"variant": vname, "batch": B}
            try:
                if device.type == "cuda": torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(device)
                step = make()
                row["tokens_per_s"] = measure(step, xs, device, args.warmup, args.steps, args.repeats)
                if device.type == "cuda": row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
                del step
            except Exception as e:
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                traceback.print_exc(limit=3, file=sys.stderr)
            results.append(row)
            extra = f", peak {row['peak_gib']:.1f} GiB" if "peak_gib" in row else ""
            print(f"  batch {B:>6}  {vname:<15} " + (f"{row['tokens_per_s']:>12,.0f} tokens/s{extra}" if "tokens_per_s" in row
                                                       else f"failed: {row['error']}"), flush=True)

    ok = {(r["variant"], r["batch"]): r["tokens_per_s"] for r in results if "tokens_per_s" in r}
    B0 = args.batch_sizes[0]
    summary = {}
    if ("dense", B0) in ok:
        base = ok[("dense", B0)]
        mine = {(n, b): v for (n, b), v in ok.items() if n in ("ours", "ours+compile")}  # library code paths only
        same = max((v, n) for (n, b), v in mine.items() if b == B0)
        best = max((v, f"{n} @ batch {b}") for (n, b), v in mine.items())
        summary = {"baseline_dense_tokens_per_s": base, "best_ours_same_batch": same[1], "ratio_same_batch": same[0] / base,
                   "best_ours": best[1], "ratio_best": best[0] / base}
        print(f"ours vs dense, both at batch {B0}: {same[0] / base:.2f}x ({same[1]}: {same[0]:,.0f} vs {base:,.0f} tokens/s)")
        print(f"best ours vs dense at batch {B0}: {best[0] / base:.2f}x ({best[1]}: {best[0]:,.0f} tokens/s)")
        lens = [(v, b) for (n, b), v in ok.items() if n == "sae_lens"]
        if lens:
            lv, lb = max(lens)
            summary.update(sae_lens_tokens_per_s=lv, ratio_vs_sae_lens=best[0] / lv)
            print(f"best ours vs sae_lens (its best, batch {lb}): {best[0] / lv:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "args": vars(args), "results": results,
                       "summary": summary}, f, indent=2, sort_keys=True)
    return results


if __name__ == "__main__":
    main()
