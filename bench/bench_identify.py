"""Step 2's greedy steps on a finished experiment, with conditions sharing forwards and with every condition run alone.

A greedy step measures every remaining candidate added to the chosen set on the select questions
(`binding_sae.identify.set_effects`). This script repeats chosen steps of a finished run (the set chosen so far is
read from its feature_catalog.json) in one process, twice: as step 2 runs them (a condition whose delta is zero, or
whose set has the same active latents and activations as another's, takes that result without a forward:
`binding_sae.forward.distinct_deltas`), and with that sharing switched off (every condition its own forward). Prints
and writes both times, their ratio, the share of conditions that ran, and the largest difference of the results.

    PYTHONPATH=$PWD python3 bench/bench_identify.py --config configs/toy.yaml --exp output/sae_experiments/toy --steps 1,4
"""
import argparse, json, time
from pathlib import Path

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--exp", required=True, help="a folder whose step 2 finished")
    ap.add_argument("--set", action="append", default=[], help="config overrides (KEY=VALUE), as the run had them")
    ap.add_argument("--steps", default="1,10,25", help="greedy steps to repeat (1 = the first chosen after the singles)")
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    a = ap.parse_args()
    import binding_sae.forward as F
    from binding_sae.config import load_config
    from binding_sae.cli import _overrides as parse_overrides
    from binding_sae.experiment import experiment_questions, split_questions, open_saes, open_model, choose_variant
    from binding_sae.identify import set_effects
    cfg = load_config(a.config, parse_overrides(a.set))
    exp = Path(a.exp)
    cat = json.loads((exp / "feature_catalog.json").read_text())
    chosen, pool = cat["selected_feature_ids"], list(dict.fromkeys(sum(cat["metadata"]["candidates"].values(), [])))
    vlm = open_model(cfg); sae = open_saes(cfg, exp, vlm)
    q = split_questions(experiment_questions(cfg, exp), "select").reset_index(drop=True)
    choose_variant(vlm, q, exp)
    how = F.SetAblation.of(cfg, cfg.feature_identification.position_type)
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    ran, plain_dd, plain_pairs, plain_rc = [], F.distinct_deltas, F.run_pairs, F.run_conditions
    F.run_pairs = lambda v, b, p, base, cols, deltas, *x, **k: ran.append(sum(len(d) for d in deltas)) or plain_pairs(v, b, p, base, cols, deltas, *x, **k)
    F.run_conditions = lambda v, b, p, base, n, *x, **k: ran.append(len(b) * n) or plain_rc(v, b, p, base, n, *x, **k)
    every = lambda d, keys=None: (torch.arange(len(d)), torch.arange(len(d)))  # no sharing: every condition runs
    res = dict(config=a.config, overrides=a.set, device=str(vlm.device), n_pool=len(pool), steps=[])
    set_effects(vlm, sae, q.head(8), how, chosen[:1], pool[:4], cfg.feature_identification.batch_size)  # warm-up
    for t in [int(s) for s in a.steps.split(",") if int(s) <= len(chosen)]:
        base = chosen[:t - 1]; extra = [j for j in pool if j not in base]
        row = dict(step=t, n_conditions=len(extra))
        for name, dd in (("shared", plain_dd), ("every_condition", every)):
            F.distinct_deltas = dd; ran.clear(); sync(); t0 = time.perf_counter()
            out = set_effects(vlm, sae, q, how, base, extra, cfg.feature_identification.batch_size)
            sync(); row[f"{name}_s"] = time.perf_counter() - t0
            row[f"{name}_rows_run"] = int(sum(ran)); row[f"{name}_change"] = out["change"]
        F.distinct_deltas = plain_dd
        row["n_questions"] = int(len(row["shared_change"]))
        row["max_abs_diff"] = float(np.abs(row.pop("shared_change") - row.pop("every_condition_change")).max())
        row["speedup"] = row["every_condition_s"] / row["shared_s"]
        row["rows_run_fraction"] = row["shared_rows_run"] / max(1, row["every_condition_rows_run"])
        res["steps"].append(row); print(json.dumps(row), flush=True)
    if a.out: Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
