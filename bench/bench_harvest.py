"""Harvest throughput on a random-weight LLaVA-1.5-7B-shaped model (issue 4 benchmark).

Measures, in one run on one GPU:
  ours      binding_sae.forward.capture at layer L (forward stopped after layer L), batched, bf16, question positions
  roofline  the same model's language forward truncated after layer L (layers[:L+1], no LM head, no hooks)
  old       the old pipeline's unit of work: batch 1, full 32-layer forward + LM head (fp16)
  ours+io   binding_sae.train.harvest end to end (PNG files → processor → capture → fp16 shards on disk), over
            `--e2e_batches` batches (the next batch prepared in a background thread), and again with 4 threads
  span      capture of the attention output of layers 10–14 (`--span`) against the forward truncated after 14
and prints examples/s, the ratios, and each forward's model FLOP/s as a fraction of a bf16 8192³ matmul measured in
the same run.

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
from binding_sae.forward import Site, capture
from binding_sae.train import harvest
from roofline import matmul_peak, transformer_flops


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
    ap.add_argument("--e2e_batches", type=int, default=16, help="batches in the end-to-end harvest")
    ap.add_argument("--span", default="10-14", help="layers of the attention-output capture (first-last)")
    ap.add_argument("--only_e2e", action="store_true", help="only the end-to-end harvest: one full pass to warm up, then timed")
    a = ap.parse_args()
    dev = "cpu" if a.tiny else "cuda"
    name = "tiny" if a.tiny else "llava-1.5-7b"
    layer = min(a.layer, 2) if a.tiny else a.layer
    vlm = random_llava(name, device=dev, dtype="float32" if a.tiny else "bfloat16", attn_implementation="sdpa")
    qs = pd.read_csv("nbs/test_data/gqa/ChooseAttr_questions.csv", dtype=str)
    qs = pd.concat([qs] * (a.e2e_batches * a.batch // len(qs) + 1), ignore_index=True).head(a.e2e_batches * a.batch)
    qs["question_id"] = [f"q{i}" for i in range(len(qs))]
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

    if not a.only_e2e:
        # model FLOPs of what the roofline computes: the vision tower on every image, the decoder layers <= L on every token
        peak = matmul_peak(torch.device(dev), n=8192 if dev == "cuda" else 512)
        vc, tc = vlm.model.config.vision_config, vlm.model.config.text_config
        n_patch = (vc.image_size // vc.patch_size) ** 2 + 1
        vision = transformer_flops(B * n_patch, n_patch, vc.num_hidden_layers, vc.hidden_size, vc.intermediate_size,
                                   vc.num_attention_heads, vc.num_attention_heads, mlp_matrices=2)
        def decoder(n_layers):
            return transformer_flops(B * seq, (seq + 1) / 2, n_layers, tc.hidden_size, tc.intermediate_size,
                                     tc.num_attention_heads, tc.num_key_value_heads)
        res["matmul_peak_flops"] = peak
        res["flop_fraction_ours"] = (vision + decoder(layer + 1)) / t_ours / peak
        res["flop_fraction_roofline"] = (vision + decoder(layer + 1)) / t_roof / peak

        # the attention output of a span of layers: one forward stopped after the last
        lo, hi = (int(x) for x in a.span.split("-"))
        lo, hi = (min(lo, 1), min(hi, 2)) if a.tiny else (lo, hi)
        sites = [Site(l, "attn_out") for l in range(lo, hi + 1)]
        t_span = timed(lambda: capture(vlm, sites, batch, "question"))
        lm.layers = full_layers[: hi + 1]
        try: t_span_roof = timed(truncated)
        finally: lm.layers = full_layers
        res.update(span=[lo, hi], span_examples_per_s=B / t_span, span_roofline_examples_per_s=B / t_span_roof,
                   ratio_span_vs_roofline=t_span_roof / t_span, flop_fraction_span=(vision + decoder(hi + 1)) / t_span / peak)

        # old unit: batch 1, full forward + LM head, fp16 weights as the old pipeline ran them
        if not a.tiny: vlm.model.to(torch.float16)
        one = vlm.encode(qs.question.tolist()[:1], images[:1], opts[:1]).to(vlm.device, vlm.model.dtype)
        def old():
            with torch.no_grad(): vlm.model(**one.model_inputs(), use_cache=False)
        t_old = timed(old, n_rep=10)
        res["old_examples_per_s"] = 1 / t_old
        if not a.tiny: vlm.model.to(torch.bfloat16)

    # end to end: our harvest() from image files to fp16 shards on disk
    import binding_sae.train as T
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i, im in enumerate(images):
            p = Path(d) / f"{i}.png"; im.save(p); paths.append(str(p))
        df = qs.assign(image_path=paths)
        harvest(vlm, df, [layer], "question", Path(d) / "warm", batch_size=B, progress=False)  # a full pass: every batch shape seen once
        def harvest_rate(folder):
            "Questions/s of one harvest of all of `df` into `folder`."
            if torch.cuda.is_available(): torch.cuda.synchronize()
            t = time.perf_counter()
            harvest(vlm, df, [layer], "question", Path(d) / folder, batch_size=B, progress=False)
            if torch.cuda.is_available(): torch.cuda.synchronize()
            return len(df) / (time.perf_counter() - t)
        res["ours_end_to_end_examples_per_s"] = harvest_rate("acts")
        import functools
        orig = T.prefetched; T.prefetched = functools.partial(orig, workers=4)  # the same with four preparing threads
        try: res["end_to_end_examples_per_s_4_threads"] = harvest_rate("acts_w4")
        finally: T.prefetched = orig

        if not a.only_e2e:
            # where the end-to-end time goes: preparing the batches alone (1 … 8 threads), and the harvest of
            # batches prepared beforehand (GPU forward, copies back, index rows, shard files)
            starts = range(0, len(df), B)
            prep = lambda b0: T.encode_questions(vlm, df.iloc[b0:b0 + B])
            for w in (1, 2, 4, 8):
                t = time.perf_counter(); list(T.prefetched(prep, starts, w))
                res[f"prepare_only_examples_per_s_workers_{w}"] = len(df) / (time.perf_counter() - t)
            ready = {b0: prep(b0) for b0 in starts}
            orig, T.prefetched = T.prefetched, lambda _fn, starts, workers=1: ((b0, ready[b0]) for b0 in starts)
            try: res["harvest_of_prepared_batches_examples_per_s"] = harvest_rate("acts_ready")
            finally: T.prefetched = orig

    res["ratio_ours_vs_roofline"] = res["ours_examples_per_s"] / res["roofline_examples_per_s"]
    if "old_examples_per_s" in res:
        res["ratio_ours_vs_old"] = res["ours_examples_per_s"] / res["old_examples_per_s"]
        res["ratio_end_to_end_vs_old"] = res["ours_end_to_end_examples_per_s"] / res["old_examples_per_s"]
    res["ratio_end_to_end_vs_roofline"] = res["ours_end_to_end_examples_per_s"] / res["roofline_examples_per_s"]
    print(json.dumps(res, indent=2))
    if a.out: Path(a.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
