"""Scaling over GPUs: the same harvest, the same SAE training and the same step-3 ablation on 1 and then 2 GPUs, in one call.

    PYTHONPATH=$PWD python3 bench/bench_multigpu.py                  # GPU: LLaVA-1.5-7B shape, 2 GPUs against 1
    PYTHONPATH=$PWD python3 bench/bench_multigpu.py --cpu            # CPU, tiny sizes, gloo: checks that it runs

The driver starts `torchrun --nproc_per_node N` on this file (worker mode) for N = 1 and then N = `--gpus`; each
launch runs, with a warm-up pass first:
  harvest   binding_sae.train.harvest end to end (PNG files → processor → capture → fp16 shards → rank 0's re-cut into
            one process's shards and index), `--questions` questions at layer `--layer`, question positions, on a
            random-weight LLaVA-1.5-7B-shaped model (bf16, SDPA); every rank harvests its contiguous block of batches
  ablate    binding_sae.ablate.ablate_questions (step 3's loop) on the same model: `--ablate_questions` questions, a
            random TopK SAE of `--d_sae` latents, the selected set (`--n_selected` latents) and `--n_random` random
            sets, attribute positions, residual mode; every rank measures its contiguous block of the question groups
            one process forms and the results are all-gathered (`binding_sae.distributed.map_batches`)
  sae       binding_sae.sae.train_sae, TopK d_in 4096 × `--d_sae` latents, k 64, global batch `--batch`, `--steps`
            steps on random activations resident on each GPU; data parallel (each rank the loss of its rows,
            one flat gradient all-reduce per step)
N = 1 is the plain single-process code (no process group). It prints each rate, the ratios N-GPU / 1-GPU against the
targets (harvest and ablation ≥ 1.8×, SAE training ≥ 1.7×), whether the N-rank harvest wrote the same bytes as one
process and the N-rank ablation gave the same numbers, and writes the JSON to `--out` (default
bench/results/multigpu.json, or multigpu_cpu.json with --cpu). NCCL's settings (NCCL_NVLS_ENABLE included) are left as
the machine sets them.
"""
import argparse, hashlib, json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"harvest": 1.8, "sae": 1.7, "ablate": 1.8}
SETTINGS = ("questions", "batch_q", "layer", "d_sae", "batch", "steps", "ablate_questions", "n_selected", "n_random")


def digest(folder) -> str:
    "One hash of every file under `folder` (names and bytes)."
    h = hashlib.sha256()
    for f in sorted(Path(folder).rglob("*")):
        if f.is_file(): h.update(str(f.relative_to(folder)).encode()); h.update(f.read_bytes())
    return h.hexdigest()[:16]


def worker(a):
    import numpy as np, pandas as pd, torch
    from PIL import Image
    from binding_sae import distributed as D
    from binding_sae.config import SAEConfig, TrainingConfig
    from binding_sae.fixtures import random_llava
    from binding_sae.sae import ActivationBatches, make_sae, train_sae
    from binding_sae.train import harvest
    dev = "cpu" if a.cpu else "cuda"
    W = D.init(dev)
    sync = (lambda: torch.cuda.synchronize()) if dev == "cuda" else (lambda: None)
    work = Path(a.work)
    res = dict(world_size=W, device=torch.cuda.get_device_name() if dev == "cuda" else "cpu")

    vlm = random_llava("tiny" if a.cpu else "llava-1.5-7b", device=dev, dtype="float32" if a.cpu else "bfloat16",
                       attn_implementation="sdpa")
    qs = pd.read_csv(ROOT / "nbs/test_data/gqa/ChooseAttr_questions.csv", dtype=str)
    qs = pd.concat([qs] * (a.questions // len(qs) + 1), ignore_index=True).head(a.questions)
    qs["question_id"] = [f"q{i}" for i in range(len(qs))]
    imgs = work / "images"
    if D.is_main() and not imgs.exists():
        imgs.mkdir(parents=True)
        side, rng = vlm.processor.image_processor.crop_size["height"], np.random.default_rng(0)
        for i in range(len(qs)): Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(imgs / f"{i}.png")
    D.barrier()
    df = qs.assign(image_path=[str(imgs / f"{i}.png") for i in range(len(qs))])
    layer = min(a.layer, 1) if a.cpu else a.layer
    if D.is_main():  # a launch with the same world size as an earlier one must harvest again, not resume its folder
        for f in (f"warm_{W}", f"harvest_{W}"): shutil.rmtree(work / f, ignore_errors=True)
    D.barrier()
    harvest(vlm, df.head(a.batch_q * W), [layer], "question", work / f"warm_{W}", batch_size=a.batch_q, progress=False)
    D.barrier(); sync(); t = time.perf_counter()
    prog = harvest(vlm, df, [layer], "question", work / f"harvest_{W}", batch_size=a.batch_q, progress=False)
    sync(); D.barrier(); t = time.perf_counter() - t
    res.update(harvest_s=t, harvest_questions_per_s=len(df) / t, harvest_vectors=prog["vectors"],
               harvest_digest=digest(work / f"harvest_{W}") if D.is_main() else None)
    res.update(ablate(a, vlm, df, layer, dev, sync))
    del vlm
    if dev == "cuda": torch.cuda.empty_cache()

    d_in = 64 if a.cpu else 4096
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.batch * 8, d_in, generator=g)
    batches = ActivationBatches(x, a.batch, seed=0, device=dev)
    s_cfg = SAEConfig(architecture="topk", n_features=a.d_sae, k=min(64, a.d_sae // 4), dead_tokens=10**12)
    t_cfg = TrainingConfig(batch_size=a.batch, learning_rate=1e-4, seed=0, warmup_steps=0,
                           dtype="float32" if a.cpu else "bfloat16", checkpoint_every=10**9)
    def train(n):
        sae = make_sae("topk", d_in, a.d_sae, seed=0, k=s_cfg.k)
        train_sae(sae, batches, s_cfg, t_cfg, n_steps=n, device=dev, progress=False)
        return sae
    train(max(2, a.steps // 5))
    D.barrier(); sync(); t = time.perf_counter()
    sae = train(a.steps)
    sync(); D.barrier(); t = time.perf_counter() - t
    res.update(sae_s=t, sae_tokens_per_s=a.steps * a.batch / t)
    if D.is_main():
        torch.save({k: v.detach().cpu() for k, v in sae.state_dict().items()}, work / f"sae_{W}.pt")
        Path(a.result).write_text(json.dumps(res))


def ablate(a, vlm, df, layer:int, dev:str, sync) -> dict:
    "Step 3's question loop (`ablate_questions`) over `--ablate_questions` questions, each rank its block; seconds and a digest."
    import numpy as np, pandas as pd
    from binding_sae import distributed as D
    from binding_sae.ablate import ablate_questions, matched_random_sets
    from binding_sae.experiment import encode_questions
    from binding_sae.forward import SetAblation
    from binding_sae.sae import make_sae
    from binding_sae.vlm import choose_option_variant
    sae = make_sae("topk", d_in=vlm.d_model, d_sae=a.d_sae, k=32, seed=0, device=dev).eval()
    rng = np.random.default_rng(0)
    selected = [int(i) for i in rng.choice(a.d_sae, min(a.n_selected, a.d_sae // 4), replace=False)]
    sets = [selected] + matched_random_sets(selected, rng.uniform(0.0, 0.2, a.d_sae), np.ones(a.d_sae), a.n_random, 5, seed=0)[0]
    qs = pd.concat([df] * (a.ablate_questions // len(df) + 1), ignore_index=True).head(a.ablate_questions)
    qs["question_id"] = [f"a{i}" for i in range(len(qs))]
    g = qs.head(8)
    choose_option_variant(vlm, encode_questions(vlm, g), g["true option"].tolist(), g["false option"].tolist())
    how = SetAblation(layer, "attribute")
    run = lambda d: ablate_questions(vlm, d, sae, how, sets, 64)
    run(qs.head(8 * D.world_size()))  # warm-up: one group per rank
    D.barrier(); sync(); t = time.perf_counter()
    r = run(qs)
    sync(); D.barrier(); t = time.perf_counter() - t
    h = hashlib.sha256()
    for part in ("baseline", "sets"):
        for k in sorted(r[part]): h.update(np.ascontiguousarray(r[part][k]).tobytes())
    return dict(ablate_s=t, ablate_questions_per_s=len(r["question_id"]) / t, ablate_questions=len(r["question_id"]),
                ablate_sets=len(sets), ablate_digest=h.hexdigest()[:16])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="tiny model and SAE on the CPU (gloo): checks that the script runs")
    ap.add_argument("--gpus", type=int, default=2, help="ranks of the second launch")
    ap.add_argument("--questions", type=int, default=None, help="questions harvested (default 512; 32 with --cpu)")
    ap.add_argument("--batch_q", type=int, default=None, help="questions per harvest forward (default 32; 4 with --cpu)")
    ap.add_argument("--layer", type=int, default=12)
    ap.add_argument("--d_sae", type=int, default=None, help="SAE latents (default 32768; 256 with --cpu)")
    ap.add_argument("--batch", type=int, default=None, help="global SAE batch (default 16384; 256 with --cpu)")
    ap.add_argument("--steps", type=int, default=None, help="timed SAE steps (default 200; 20 with --cpu)")
    ap.add_argument("--ablate_questions", type=int, default=None, help="questions ablated (default 128; 64 with --cpu)")
    ap.add_argument("--n_selected", type=int, default=50, help="latents of the selected set (ablation)")
    ap.add_argument("--n_random", type=int, default=100, help="random sets ablated beside the selected one")
    ap.add_argument("--out", default=None, help="JSON written (default bench/results/multigpu.json, multigpu_cpu.json with --cpu)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    a = ap.parse_args()
    for k, gpu, cpu in (("questions", 512, 32), ("batch_q", 32, 4), ("d_sae", 32768, 256), ("batch", 16384, 256), ("steps", 200, 20),
                        ("ablate_questions", 128, 64)):
        if getattr(a, k) is None: setattr(a, k, cpu if a.cpu else gpu)
    if a.worker: return worker(a)
    import torch
    if not a.cpu and torch.cuda.device_count() < a.gpus:
        sys.exit(f"bench_multigpu: {a.gpus} GPUs needed, {torch.cuda.device_count()} visible: use a machine with them, or --cpu.")
    out = Path(a.out or ROOT / "bench/results" / ("multigpu_cpu.json" if a.cpu else "multigpu.json"))
    runs = {}
    with tempfile.TemporaryDirectory() as work:
        for n in (1, a.gpus):
            result = Path(work) / f"result_{n}.json"
            args = [f"--{k}={getattr(a, k)}" for k in SETTINGS]
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", __file__,
                   "--worker", f"--work={work}", f"--result={result}", *args, *(["--cpu"] if a.cpu else [])]
            print("$", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
            runs[n] = json.loads(result.read_text())
        w1, w2 = (torch.load(Path(work) / f"sae_{n}.pt") for n in (1, a.gpus))
        sae_diff = max(float((w1[k].float() - w2[k].float()).abs().max()) for k in w1)
    one, many = runs[1], runs[a.gpus]
    ratios = {"harvest": many["harvest_questions_per_s"] / one["harvest_questions_per_s"],
              "sae": many["sae_tokens_per_s"] / one["sae_tokens_per_s"],
              "ablate": many["ablate_questions_per_s"] / one["ablate_questions_per_s"]}
    res = dict(cpu=a.cpu, gpus=a.gpus, settings={k: getattr(a, k) for k in SETTINGS},
               runs={str(k): v for k, v in runs.items()}, speedup=ratios, targets=TARGETS,
               harvest_same_bytes=one["harvest_digest"] == many["harvest_digest"], sae_max_abs_diff=sae_diff,
               ablate_same_numbers=one["ablate_digest"] == many["ablate_digest"],
               nccl_nvls_enable=os.environ.get("NCCL_NVLS_ENABLE"))
    print(f"\ndevice {one['device']}; {a.gpus} ranks against 1" + (" (CPU: a check that it runs, not a measurement)" if a.cpu else ""))
    print(f"harvest   {one['harvest_questions_per_s']:9.1f} → {many['harvest_questions_per_s']:9.1f} questions/s   "
          f"{ratios['harvest']:.2f}× (target ≥ {TARGETS['harvest']}×{' ✓' if ratios['harvest'] >= TARGETS['harvest'] else ' ✗'})   "
          f"same shards and index as 1 rank: {res['harvest_same_bytes']}")
    print(f"SAE       {one['sae_tokens_per_s']:9.0f} → {many['sae_tokens_per_s']:9.0f} tokens/s      "
          f"{ratios['sae']:.2f}× (target ≥ {TARGETS['sae']}×{' ✓' if ratios['sae'] >= TARGETS['sae'] else ' ✗'})   "
          f"max |Δweight| vs 1 rank after {a.steps} steps: {sae_diff:.2e}")
    print(f"ablate    {one['ablate_questions_per_s']:9.2f} → {many['ablate_questions_per_s']:9.2f} questions/s   "
          f"{ratios['ablate']:.2f}× (target ≥ {TARGETS['ablate']}×{' ✓' if ratios['ablate'] >= TARGETS['ablate'] else ' ✗'})   "
          f"same numbers as 1 rank ({one['ablate_sets']} sets): {res['ablate_same_numbers']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
