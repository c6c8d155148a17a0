"""Harvest throughput on a random-weight LLaVA-1.5-7B-shaped model (issue 4 benchmark).

Measures, in one run on one GPU:
  ours      binding_sae.forward.capture at layer L (forward stopped after layer L), batched, bf16, question positions
  roofline  the same model's language forward truncated after layer L (layers[:L+1], no LM head, no hooks)
  old       the old pipeline's unit of work: batch 1, full 32-layer forward + LM head (fp16)
  ours+io   binding_sae.train.harvest end to end (PIL images → processor → capture → fp16 shards on disk)
and prints examples/s and the ratios ours/roofline and ours/old.

    PYTHONPATH=. python3 bench/bench_harvest.py            # GPU, LLaVA-1.5-7B shape, layer 12
    PYTHONPATH=. python3 bench/bench_harvest.py --tiny     # CPU smoke check of the script
"""
import argparse, json, tempfile, time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from binding_sae.fixtures import random_llava
from binding_sae.forward import capture
from binding_sae.train import harvest


def timed(fn, n_warm=2, n_rep=5, sync=True):
    for _ in range(n_warm): fn()
    if sync and torch.cuda.is_available(): torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n_rep): fn()
    if sync and torch.cuda.is_available(): torch.cuda.synchronize()
    return (time.perf_counter() - t) / n_rep


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="tiny model on the CPU (checks the script)")
    ap.add_argument("--layer", type=int, default=12)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    a = ap.parse_args()
    dev = "cpu" if a.tiny else "cuda"
    name = "tiny" if a.tiny else "llava-1.5-7b"
    layer = min(a.layer, 2) if a.tiny else a.layer
    vlm = random_llava(name, device=dev, dtype="float32" if a.tiny else "bfloat16", attn_implementation="sdpa")
    qs = pd.read_csv("nbs/test_data/gqa/ChooseAttr_questions.csv", dtype=str).head(max(4 * a.batch, 64))
    rng = np.random.default_rng(0)
    side = vlm.processor.image_processor.crop_size["height"]
    images = [Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)) for _ in range(len(qs))]
    opts = list(zip(qs["true option"], qs["false option"]))
    B = a.batch
    batch = vlm.encode(qs.question.tolist()[:B], images[:B], opts[:B])
    seq = batch.seq_len
    res = dict(model=name, device=torch.cuda.get_device_name(0) if dev == "cuda" else "cpu", layer=layer, batch=B, seq_len=seq)

    # ours: capture with the forward stopped after `layer`
    t_ours = timed(lambda: capture(vlm, [layer], batch, "question"))
    res["ours_examples_per_s"] = B / t_ours

    # roofline: the language model truncated after `layer` (embeddings + vision + layers[:layer+1]), no hooks, no head
    lm = vlm.model.model.language_model
    full_layers = lm.layers
    def truncated():
        with torch.no_grad(): vlm.model.model(**batch.model_inputs(), use_cache=False)
    lm.layers = full_layers[: layer + 1]
    try: t_roof = timed(truncated)
    finally: lm.layers = full_layers
    res["roofline_examples_per_s"] = B / t_roof

    # old unit: batch 1, full forward + LM head, fp16 weights as the old pipeline ran them
    if not a.tiny: vlm.model.to(torch.float16)
    one = vlm.encode(qs.question.tolist()[:1], images[:1], opts[:1]).to(vlm.device, vlm.model.dtype)
    def old():
        with torch.no_grad(): vlm.model(**one.model_inputs(), use_cache=False)
    t_old = timed(old, n_rep=10)
    res["old_examples_per_s"] = 1 / t_old
    if not a.tiny: vlm.model.to(torch.bfloat16)

    # end to end: our harvest() from image files to fp16 shards on disk
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i, im in enumerate(images):
            p = Path(d) / f"{i}.png"; im.save(p); paths.append(str(p))
        df = qs.assign(image_path=paths)
        harvest(vlm, df.head(B), [layer], "question", Path(d) / "warm", batch_size=B, progress=False)
        if torch.cuda.is_available(): torch.cuda.synchronize()
        t = time.perf_counter()
        harvest(vlm, df, [layer], "question", Path(d) / "acts", batch_size=B, progress=False)
        if torch.cuda.is_available(): torch.cuda.synchronize()
        res["ours_end_to_end_examples_per_s"] = len(df) / (time.perf_counter() - t)

    res["ratio_ours_vs_roofline"] = res["ours_examples_per_s"] / res["roofline_examples_per_s"]
    res["ratio_ours_vs_old"] = res["ours_examples_per_s"] / res["old_examples_per_s"]
    res["ratio_end_to_end_vs_old"] = res["ours_end_to_end_examples_per_s"] / res["old_examples_per_s"]
    print(json.dumps(res, indent=2))
    if a.out: Path(a.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
