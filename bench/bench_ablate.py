"""Step 3 speed (issue 5 benchmark): SAE ablation with matched random sets, and the attention-knockout sweep.

Measures, in one run on one GPU, on a random-weight LLaVA-1.5-7B-shaped model (bf16, SDPA) with ~616-token prompts
(LLaVA-1.5 system prompt + 576 image tokens + a GQA ChooseAttr question):
  ablate   binding_sae.ablate.ablate_batch: each question's image prefix once (KV cache), layers ≤ L reused from the
           baseline, only layers > L run per condition, the conditions (selected set + random sets) as segments of
           shared-prefix rows (custom 4-D mask, one cache copy per question and forward)
  knockout binding_sae.ablate.knockout_batch: the image prefix cached once per question (extended to the last
           token for the ->Last flows), every (flow, centre layer) one segment of a shared-prefix row with a custom
           4-D mask (3 flows × 32 layers, window 9; no per-condition cache copies)
  interchange binding_sae.interchange.interchange_batch: the same sets swapped from a counterfactual scene (other
           images, same questions), plus the whole-residual, other-position and same-answer conditions; the base,
           counterfactual and same-answer scenes each run once, the conditions as in the ablation. Reported per
           question-condition and as a ratio to the ablation of the same run (target <= 2x)
  old      the old pipeline's unit: a batch-1 full forward of the whole prompt (6 of them per ablation
           question-condition; 1 per knockout question-condition, with the knockout mask)
and prints ms per question-condition and the ratios old / ours (target ≥ 50×).

    PYTHONPATH=. python3 bench/bench_ablate.py               # GPU, LLaVA-1.5-7B shape, layer 12, 100 random sets
    PYTHONPATH=. python3 bench/bench_ablate.py --tiny --cpu  # tiny model on the CPU (checks the script)
"""
import argparse, json, time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from binding_sae.vlm import forward_last, choose_option_variant, option_token_ids
from binding_sae.fixtures import random_llava
from binding_sae.forward import knockout, flow_blocks, knockout_layers, plan_batches, uncached, SetAblation
from binding_sae.sae import make_sae
from binding_sae.ablate import ablate_batch, knockout_batch, matched_random_sets
from binding_sae.interchange import interchange_batch, FIXED_CONDITIONS
from roofline import matmul_peak, transformer_flops

FLOWS3 = ["Image->Question", "Image->Last", "Question->Last"]


def sync():
    if torch.cuda.is_available(): torch.cuda.synchronize()


def timed(fn, n_warm=1, n_rep=3):
    "Mean seconds of fn() after warm-up (CUDA-synchronised)."
    for _ in range(n_warm): fn()
    sync(); t = time.perf_counter()
    for _ in range(n_rep): fn()
    sync()
    return (time.perf_counter() - t) / n_rep


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="tiny random LLaVA instead of the 7B shape")
    ap.add_argument("--cpu", action="store_true", help="run on the CPU")
    ap.add_argument("--layer", type=int, default=12, help="SAE layer (model.target_layer)")
    ap.add_argument("--d_sae", type=int, default=32768)
    ap.add_argument("--n_selected", type=int, default=50, help="selected features (feature_identification.top_k)")
    ap.add_argument("--n_random", type=int, default=100, help="matched random sets (ablation.n_random_features)")
    ap.add_argument("--n_questions", type=int, default=8)
    ap.add_argument("--conditions_per_forward", type=int, default=64, help="ablation.batch_size / knockout.batch_size")
    ap.add_argument("--cache_gb", type=float, default=None, help="KV-cache budget per forward (default 12 on cuda)")
    ap.add_argument("--window", type=int, default=9)
    ap.add_argument("--position_type", default="attribute")
    ap.add_argument("--attn", default="sdpa", help="attention implementation (sdpa | eager)")
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    a = ap.parse_args()
    dev = "cpu" if a.cpu or not torch.cuda.is_available() else "cuda"
    name = "tiny" if a.tiny else "llava-1.5-7b"
    if a.tiny: a.layer, a.d_sae, a.n_selected = min(a.layer, 1), min(a.d_sae, 256), min(a.n_selected, 8)
    dtype = "float32" if dev == "cpu" else "bfloat16"
    t0 = time.perf_counter()
    vlm = random_llava(name, device=dev, dtype=dtype, attn_implementation=a.attn)
    load_s = time.perf_counter() - t0

    qs = pd.read_csv("nbs/test_data/gqa/ChooseAttr_questions.csv", dtype=str).head(a.n_questions)
    rng = np.random.default_rng(0)
    side = vlm.processor.image_processor.crop_size["height"]
    images = [Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)) for _ in range(len(qs))]
    t_opt, f_opt = qs["true option"].tolist(), qs["false option"].tolist()
    opts = list(zip(t_opt, f_opt))
    probe = vlm.encode(qs.question.tolist(), images, opts, pad_at="question")
    choose_option_variant(vlm, probe, t_opt, f_opt)
    T_ids, F_ids = option_token_ids(vlm, t_opt), option_token_ids(vlm, f_opt)

    sae = make_sae("topk", d_in=vlm.d_model, d_sae=a.d_sae, k=32, seed=0, device=dev).eval()
    fr = rng.uniform(0.0, 0.2, a.d_sae)
    selected = [int(i) for i in rng.choice(a.d_sae, a.n_selected, replace=False)]
    rand_sets, _ = matched_random_sets(selected, fr, np.ones(a.d_sae), a.n_random, 5, seed=0)
    sets = [selected] + rand_sets
    budget = a.cache_gb * 1e9 if a.cache_gb else None
    q_ab, rows_ab = plan_batches(vlm, len(sets), a.conditions_per_forward, cache_bytes=budget, max_questions=8,
                                 shared_prefix=a.position_type != "all")
    ko_layers = list(range(vlm.n_layers))
    n_ko = len(FLOWS3) * len(ko_layers)
    q_ko, rows_ko = plan_batches(vlm, len(ko_layers), a.conditions_per_forward, cache_bytes=budget, max_questions=8,
                                 shared_prefix=True)
    res = dict(model=name, device=torch.cuda.get_device_name(0) if dev == "cuda" else "cpu", dtype=dtype,
               attn=a.attn, layer=a.layer, d_sae=a.d_sae, n_selected=a.n_selected, n_random_sets=a.n_random,
               n_questions=len(qs), prompt_tokens=float(probe.attention_mask.sum(1).float().mean()),
               seq_len=probe.seq_len, window=a.window, n_knockout_conditions=n_ko,
               ablate_questions_per_batch=q_ab, ablate_rows_per_forward=rows_ab,
               knockout_questions_per_batch=q_ko, knockout_rows_per_forward=rows_ko,
               torch=torch.__version__, model_load_s=load_s)
    batches = [vlm.encode(qs.question.tolist()[i:i + q_ab], images[i:i + q_ab], opts[i:i + q_ab], pad_at="question")
               for i in range(0, len(qs), q_ab)]

    # ours: step 3's ablation (prefix cache + layers ≤ L reused + batched suffixes), all sets, every question
    def run_ablate():
        for i, b in enumerate(batches):
            s = slice(i * q_ab, i * q_ab + len(b))
            ablate_batch(vlm, b, sae, SetAblation(a.layer, a.position_type), sets, (T_ids[s], F_ids[s]), rows_ab)
    if dev == "cuda": torch.cuda.reset_peak_memory_stats()
    t_ab = timed(run_ablate, n_warm=1, n_rep=2)
    res["ablate_ms_per_question_condition"] = 1e3 * t_ab / (len(qs) * len(sets))
    if dev == "cuda": res["ablate_peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
    # model FLOPs of one question-condition: the rows from the first edited position to the end through the layers
    # above L (attending to everything before them), and the LM head at the last position
    tc = vlm.model.config.text_config
    r_, c_ = probe.index(a.position_type)
    first = torch.stack([c_[r_ == i].min() for i in range(len(probe))]).float().cpu()
    suffix = probe.seq_len - first
    per_cond = float(sum(transformer_flops(float(n), float(f) + float(n) / 2, vlm.n_layers - a.layer - 1, tc.hidden_size,
                                           tc.intermediate_size, tc.num_attention_heads, tc.num_key_value_heads)
                         for n, f in zip(suffix, first)) / len(probe)) + 2 * tc.hidden_size * tc.vocab_size
    peak = matmul_peak(torch.device(dev), n=8192 if dev == "cuda" else 512)
    # the forwards that ran: a condition whose delta is zero (no latent of its set active at the question's positions)
    # or equal to another condition's takes that result without a forward (`binding_sae.forward.distinct_deltas`)
    import binding_sae.forward as F
    ran, plain, pairs = [], F.run_conditions, F.run_pairs
    F.run_conditions = lambda vlm_, batch, prefix, base, n, *args, **kw: ran.append(len(batch) * n) or plain(vlm_, batch, prefix, base, n, *args, **kw)
    F.run_pairs = lambda vlm_, batch, prefix, base, cols, deltas, *args, **kw: ran.append(sum(len(x) for x in deltas)) or pairs(vlm_, batch, prefix, base, cols, deltas, *args, **kw)
    try: run_ablate()
    finally: F.run_conditions, F.run_pairs = plain, pairs
    res["ablate_rows_run_fraction"] = sum(ran) / (len(qs) * len(sets))  # rows run (segment padding included) / question-conditions
    res["ablate_ms_per_row_run"] = res["ablate_ms_per_question_condition"] / res["ablate_rows_run_fraction"]
    res.update(matmul_peak_flops=peak, suffix_tokens_mean=float(suffix.mean()), flops_per_question_condition=per_cond,
               ablate_flop_fraction=per_cond / (res["ablate_ms_per_row_run"] / 1e3) / peak)  # of the forwards that ran

    # ours: the interchange, the same sets swapped from counterfactual scenes (other random images, same questions)
    cf_images = [Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)) for _ in range(len(qs))]
    same_images = [Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)) for _ in range(len(qs))]
    enc = lambda ims, i: vlm.encode(qs.question.tolist()[i:i + q_ab], ims[i:i + q_ab], opts[i:i + q_ab], pad_at="question")
    triples = [(enc(images, i), enc(cf_images, i), enc(same_images, i)) for i in range(0, len(qs), q_ab)]
    def run_interchange():
        for i, (b, c, s_) in enumerate(triples):
            s = slice(i * q_ab, i * q_ab + len(b))
            interchange_batch(vlm, b, c, s_, sae, SetAblation(a.layer, a.position_type), sets, (T_ids[s], F_ids[s]), rows_ab)
    if dev == "cuda": torch.cuda.reset_peak_memory_stats()
    t_ic = timed(run_interchange, n_warm=1, n_rep=2)
    n_ic = len(sets) + len(FIXED_CONDITIONS)
    res["interchange_conditions_per_question"] = n_ic
    res["interchange_ms_per_question_condition"] = 1e3 * t_ic / (len(qs) * n_ic)
    res["interchange_vs_ablate"] = res["interchange_ms_per_question_condition"] / res["ablate_ms_per_question_condition"]
    res["interchange_flop_fraction_lower_bound"] = per_cond / (res["interchange_ms_per_question_condition"] / 1e3) / peak  # its edits start no later
    if dev == "cuda": res["interchange_peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
    b, c, s_ = triples[0]
    ids0 = (T_ids[:len(b)], F_ids[:len(b)])
    r_self = interchange_batch(vlm, b, b, b, sae, SetAblation(a.layer, a.position_type), sets[:3], ids0, rows_ab)
    res["check_interchange_self_swap_max_abs_diff"] = float(np.abs(r_self["sets"]["logit_diff"] - r_self["baseline"]["logit_diff"][:, None]).max())

    # the old loop's unit: 6 batch-1 full forwards of one question's prompt
    one = vlm.encode(qs.question.tolist()[:1], images[:1], opts[:1])
    t_fwd = timed(lambda: forward_last(vlm, one), n_warm=2, n_rep=5)
    res["full_forward_b1_ms"] = 1e3 * t_fwd
    res["old_ablate_ms_per_question_condition"] = 6e3 * t_fwd
    res["ablate_speedup"] = res["old_ablate_ms_per_question_condition"] / res["ablate_ms_per_question_condition"]

    # ours: the knockout sweep (3 flows × all layers, window w), batched suffixes on the prefix cache
    kb = [vlm.encode(qs.question.tolist()[i:i + q_ko], images[i:i + q_ko], opts[i:i + q_ko], pad_at="question")
          for i in range(0, len(qs), q_ko)]
    def run_knockout():
        for i, b in enumerate(kb):
            s = slice(i * q_ko, i * q_ko + len(b))
            knockout_batch(vlm, b, FLOWS3, ko_layers, a.window, T_ids[s], F_ids[s], rows_ko)
    if dev == "cuda": torch.cuda.reset_peak_memory_stats()
    t_ko = timed(run_knockout, n_warm=1, n_rep=2)
    res["knockout_ms_per_question_condition"] = 1e3 * t_ko / (len(qs) * n_ko)
    if dev == "cuda": res["knockout_peak_gb"] = torch.cuda.max_memory_allocated() / 1e9

    # the old knockout unit: one batch-1 full forward with the knockout mask (Question->Last, window around the middle)
    mid = vlm.n_layers // 2
    blk = {l: flow_blocks(vlm, one, "Question->Last") for l in knockout_layers(mid, a.window, vlm.n_layers)}
    def old_ko():
        with knockout(vlm, blk): forward_last(vlm, one)
    t_oko = timed(old_ko, n_warm=2, n_rep=5)
    res["old_knockout_ms_per_question_condition"] = 1e3 * t_oko
    res["knockout_speedup"] = res["old_knockout_ms_per_question_condition"] / res["knockout_ms_per_question_condition"]

    # sanity: the cached baseline equals a full forward (bf16 tolerance on GPU)
    b0 = batches[0]
    r0 = ablate_batch(vlm, b0, sae, SetAblation(a.layer, a.position_type), [[]], (T_ids[:len(b0)], F_ids[:len(b0)]), n_rows=rows_ab)
    full = forward_last(vlm, b0)[0]
    ld = (full[range(len(b0)), T_ids[:len(b0)].to(full.device)] - full[range(len(b0)), F_ids[:len(b0)].to(full.device)]).cpu().numpy()
    res["check_baseline_max_abs_diff"] = float(np.abs(r0["baseline"]["logit_diff"] - ld).max())
    res["check_empty_set_max_abs_diff"] = float(np.abs(r0["sets"]["logit_diff"][:, 0] - r0["baseline"]["logit_diff"]).max())
    kq = kb[0]
    kw = dict(flows=["Question->Last", "Image->Question"], layers=[mid], window=a.window, true_ids=T_ids[:len(kq)],
              false_ids=F_ids[:len(kq)], n_rows=rows_ko)
    seg = knockout_batch(vlm, kq, **kw)
    with uncached(): full_ko = knockout_batch(vlm, kq, **kw)
    res["check_knockout_segments_max_abs_diff"] = float(np.abs(seg["conditions"]["logit_diff"] - full_ko["conditions"]["logit_diff"]).max())
    res["knockout_mean_abs_logit_diff_change"] = float(np.abs(seg["conditions"]["logit_diff"] - seg["baseline"]["logit_diff"][:, None]).mean())

    w = max(len(k) for k in res)
    for k, v in res.items(): print(f"{k:<{w}}  {v:.4g}" if isinstance(v, float) else f"{k:<{w}}  {v}")
    print(f"ablation: {res['ablate_ms_per_question_condition']:.2f} ms vs old {res['old_ablate_ms_per_question_condition']:.1f} ms "
          f"per question-condition -> {res['ablate_speedup']:.0f}x; knockout: {res['knockout_ms_per_question_condition']:.2f} ms vs "
          f"old {res['old_knockout_ms_per_question_condition']:.1f} ms -> {res['knockout_speedup']:.0f}x; interchange: "
          f"{res['interchange_ms_per_question_condition']:.2f} ms -> {res['interchange_vs_ablate']:.2f}x the ablation")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
