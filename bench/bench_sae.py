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
AuxK stays off in these variants: no latent can be dead within a benchmark's few hundred thousand tokens.

`--pipeline` measures the pipeline's own training path instead: `train_sae` over fp16 shard files on disk (as step 1
harvests them) through `ActivationBatches(device=cuda)` — resident on the GPU, and again with `max_resident_bytes=0`
(gathered on the CPU, pinned and copied ahead) — with AuxK active (`sae.dead_tokens` one batch, so dead latents exist
from the second step) and a checkpoint written in the timed window (`--checkpoint_every`), against `SAETrainer.step` on
the same shape, AuxK and batches already on the device, in the same run. Each rate is taken over the same number of
steps. Both report the achieved dense-matmul FLOP/s as a fraction of a bf16 8192³ matmul measured in the same run.
"""
import argparse, dataclasses, json, statistics, sys, tempfile, time, traceback
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from safetensors.torch import save_file
from binding_sae.sae import SAEError, ActivationBatches, SAETrainer, TopKSAE, init_from_data, make_sae, train_sae
from binding_sae.config import SAEConfig, TrainingConfig
from roofline import matmul_peak, sae_step_flops


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


class TimedBatches(ActivationBatches):
    "ActivationBatches that note the (synchronised) time when batch `marks[0]` and `marks[1]` are requested."
    def __init__(self, *a, marks=(0, 1), **kw):
        super().__init__(*a, **kw); self.marks, self.times = marks, {}
    def iter_from(self, cursor):
        for i, b in enumerate(super().iter_from(cursor), start=cursor):
            if i in self.marks: sync(self.device or torch.device("cpu")); self.times[i] = time.perf_counter()
            yield b


def pipeline_rows(args, device, peak):
    "The pipeline's training path (shards on disk → ActivationBatches → train_sae, AuxK on, a checkpoint) vs the bare step."
    B, n0, n = args.batch_sizes[0], args.warmup, args.window
    tmp = Path(tempfile.mkdtemp())
    g = torch.Generator().manual_seed(1)
    for i in range(args.pipeline_rows // 32768):
        save_file({"activations": (torch.randn(32768, args.d_in, generator=g) + 0.5).half()}, tmp / f"shard_{i}.safetensors")
    shards = sorted(tmp.glob("*.safetensors"))
    sae_cfg = SAEConfig(dead_tokens=B)
    training = TrainingConfig(learning_rate=1e-4, warmup_steps=0, decay_fraction=0.0, dtype="bfloat16",
                              checkpoint_every=args.checkpoint_every)
    import itertools
    cpu = [b for b in itertools.islice(ActivationBatches(shards, B, seed=3), 3)]
    same = {}
    for name, kw in [("resident", {}), ("copied_ahead", {"max_resident_bytes": 0})]:
        ab = ActivationBatches(shards, B, seed=3, device=device, **kw)
        same[name] = {"resident": ab.resident, "batches_equal_cpu": all(torch.equal(a, b.cpu()) for a, b in zip(cpu, itertools.islice(ab, 3)))}
    rows, flops = [], sae_step_flops(B, args.d_in, args.d_sae, auxk=True)
    xs = [b.to(device) for b in cpu]
    sae = make_sae("topk", args.d_in, args.d_sae, k=args.k); init_from_data(sae, xs[0])
    tr = SAETrainer(sae, 10**9, sae_cfg, training, device=str(device))
    for _ in range(n0): tr.step(xs[0])
    rate = measure(tr.step, xs, device, 0, n, 1)
    rows.append({"variant": "SAETrainer.step (AuxK on, batches on the device)", "batch": B, "tokens_per_s": rate,
                 "flop_fraction": rate / B * flops / peak})
    for name, kw, every in [("train_sae, resident shards", {}, args.checkpoint_every),
                            ("train_sae, copied ahead", {"max_resident_bytes": 0}, args.checkpoint_every),
                            ("train_sae, resident shards, no checkpoint in the window", {}, 10**9)]:
        training = dataclasses.replace(training, checkpoint_every=every)
        torch.cuda.empty_cache() if device.type == "cuda" else None
        ab = TimedBatches(shards, B, seed=3, device=device, marks=(n0, n0 + n), **kw)
        sae = make_sae("topk", args.d_in, args.d_sae, k=args.k)
        t0 = time.perf_counter()
        try:  # the run is planned as the 7B config's (its log interval), and stopped when the timed batches run out
            train_sae(sae, itertools.islice(ab.iter_from(0), n0 + n + 1), sae_cfg, training, n_steps=args.planned_steps,
                      device=str(device), checkpoint_path=tmp / "ck.pt", progress=False)
        except SAEError as e:
            if "ran out" not in str(e): raise
        wall = time.perf_counter() - t0
        rate = n * B / (ab.times[n0 + n] - ab.times[n0])
        rows.append({"variant": name, "batch": B, "tokens_per_s": rate, "flop_fraction": rate / B * flops / peak,
                     "checkpoints_in_window": len([s for s in range(n0 + 1, n0 + n + 1) if s % every == 0]),
                     "wall_s_whole_call": wall,
                     **({"checkpoint_gib": (tmp / "ck.pt").stat().st_size / 2**30} if (tmp / "ck.pt").exists() else {})})
        (tmp / "ck.pt").unlink(missing_ok=True)
    # what a checkpoint costs the training thread: the copy to the CPU, and steps run while another thread writes it
    from binding_sae.sae import _cpu_copy, _write_checkpoint
    import threading
    sd = tr.state_dict()
    sync(device); t = time.perf_counter(); snap = _cpu_copy(sd); sync(device)
    cost = {"copy_to_cpu_s": time.perf_counter() - t}
    pinned = {}; _cpu_copy(sd, pinned); sync(device)  # CheckpointWriter's path: page-locked buffers, reused
    t = time.perf_counter(); _cpu_copy(sd, pinned); sync(device); cost["copy_to_reused_pinned_s"] = time.perf_counter() - t
    t = time.perf_counter(); _write_checkpoint(tmp / "solo.pt", snap); cost["write_s"] = time.perf_counter() - t
    w = threading.Thread(target=_write_checkpoint, args=(tmp / "bg.pt", snap)); w.start()
    steps_during, t = 0, time.perf_counter()
    while w.is_alive(): tr.step(xs[steps_during % len(xs)]); steps_during += 1
    sync(device); during = steps_during * B / (time.perf_counter() - t)
    cost.update(steps_during_write=steps_during, tokens_per_s_during_write=during,
                tokens_per_s_alone=rows[0]["tokens_per_s"], slowdown_during_write=rows[0]["tokens_per_s"] / during)
    print(f"  checkpoint: copy to the CPU {cost['copy_to_cpu_s']:.2f} s (into reused pinned buffers {cost['copy_to_reused_pinned_s']:.2f} s), write {cost['write_s']:.2f} s; steps while another "
          f"thread writes: {during:,.0f} tokens/s ({cost['slowdown_during_write']:.2f}x slower)", flush=True)
    base = rows[0]["tokens_per_s"]
    for r in rows: r["ratio_vs_step"] = r["tokens_per_s"] / base
    for r in rows:
        print(f"  {r['variant']:<50} {r['tokens_per_s']:>12,.0f} tokens/s  {r['ratio_vs_step']:.2f}x  "
              f"{100 * r['flop_fraction']:.0f} % of the matmul peak", flush=True)
    print(f"  batches served on the device equal the CPU's: {same}")
    import shutil; shutil.rmtree(tmp)
    return {"rows": rows, "batches": same, "steps_in_window": n, "checkpoint_cost": cost}


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
    p.add_argument("--pipeline", action="store_true", help="measure the pipeline's training path (see above) instead")
    p.add_argument("--pipeline_rows", type=int, default=65536, help="activation rows on disk for --pipeline (65,536 x 4096 fp16 = 0.5 GB)")
    p.add_argument("--window", type=int, default=1000, help="steps timed in --pipeline")
    p.add_argument("--checkpoint_every", type=int, default=1000, help="as training.checkpoint_every of configs/llava15_7b.yaml")
    p.add_argument("--planned_steps", type=int, default=48828, help="steps the --pipeline run is planned for (sets the log interval): the 7B config's 2e8 tokens / 4096")
    args = p.parse_args(argv)
    if args.small:
        args.d_in, args.d_sae, args.k, args.batch_sizes = 256, 2048, 16, [512, 1024]
        args.steps, args.warmup, args.repeats = 5, 2, 1
        args.pipeline_rows, args.window, args.checkpoint_every, args.planned_steps = 32768 * 2, 20, 10, 1000
    device = torch.device("cpu" if args.cpu or not torch.cuda.is_available() else "cuda")
    if args.threads or device.type == "cpu": torch.set_num_threads(args.threads or 1)
    if device.type == "cuda": torch.backends.cuda.matmul.allow_tf32 = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}, torch {torch.__version__}, d_in {args.d_in} x d_sae {args.d_sae}, k {args.k}, "
          f"batches {args.batch_sizes}, {args.steps} steps x {args.repeats} after {args.warmup} warm-up", flush=True)
    peak = matmul_peak(device, n=8192 if device.type == "cuda" else 1024)
    print(f"bf16 matmul peak measured now: {peak / 1e12:.1f} TFLOP/s", flush=True)
    if args.pipeline:
        out = pipeline_rows(args, device, peak)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"device": name, "torch": torch.__version__, "args": vars(args), "matmul_peak_flops": peak, **out},
                          f, indent=2, sort_keys=True)
        return out
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
                row["flop_fraction"] = row["tokens_per_s"] / B * sae_step_flops(B, args.d_in, args.d_sae, auxk=False) / peak
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
