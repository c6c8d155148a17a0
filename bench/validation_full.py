"""Full-size validation (nbs/19_validation.ipynb at `smoke: False`) with the organism × seed runs in parallel processes.

    PYTHONPATH=$PWD python3 bench/validation_full.py --out output/validation --jobs 10
    PYTHONPATH=$PWD python3 bench/validation_full.py --out output/validation_two_route --jobs 10 \
        --config configs/toy_two_route.yaml --positive two_route=models/toy_llava_two_route

`--config` and `--positive NAME=MODEL` swap the pre-registered config and the positive organism (the first organism,
models/toy_llava, stays the negative control). Each worker runs one (organism, seed): the pipeline (steps 1-4) and, on the positive organism, the random-SAE baseline;
then `validate` reads the finished runs (it skips finished steps), adds the feature-tracking tables and writes
<out>/validation.json. The result is the same computation as the notebook's full run, only scheduled in parallel."""
import argparse, json, os, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CONFIG = "configs/toy_routed.yaml"
ORGANISMS = {"routed": ("models/toy_llava_routed", True), "shortcut": ("models/toy_llava", False)}

def choose(config, positive):
    "Set CONFIG and ORGANISMS from --config and --positive NAME=MODEL (None: keep the defaults)."
    global CONFIG, ORGANISMS
    if config: CONFIG = config
    if positive:
        name, model = positive.split("=", 1)
        ORGANISMS = {name: (model, True), "shortcut": ORGANISMS["shortcut"]}

def one(name, seed, out):
    from binding_sae.validation import replicate
    replicate(CONFIG, name, *ORGANISMS[name], seed, out)

def summarize(out, dest):
    "Rows and detection rates from the finished runs' reports in `out` (what validate() reports, without recomputing)."
    import pandas as pd
    from binding_sae.validation import verdict_row, detection_rate
    from binding_sae.config import atomic_write_json
    rows = []
    for f in sorted(Path(out).glob("*_s*/analysis/hypothesis_report.json")):
        name, seed = f.parts[-3].rsplit("_s", 1)
        if name not in ORGANISMS or not seed.isdigit(): continue
        r = json.loads(f.read_text())
        p = next(c for c in r["conditions"] if c["condition"] == r["primary_condition"])
        rows.append({"organism": name, "positive": ORGANISMS[name][1], "seed": int(seed), **verdict_row(r),
                     **{k: p.get(k) for k in ("readout_relative_drop", "answer_max_share", "control_relative_drop")},
                     "max_abs_smd": (r["metadata"]["ablation_metadata"].get("matching") or {}).get("max_abs_smd")})
    df = pd.DataFrame(rows)
    rates = {n: {v: detection_rate(g[v].fillna(False)) for v in ("supported", "necessary")} for n, g in df.groupby("organism")}
    atomic_write_json(dest, {"config": CONFIG, "organisms": {n: {"model": ORGANISMS[n][0], "positive": ORGANISMS[n][1], **rates[n]} for n in rates},
                             "runs": rows})
    return df, rates

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="output/validation"); ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1); ap.add_argument("--worker", nargs=2)
    ap.add_argument("--summarize", metavar="JSON", help="only summarize the finished runs in --out into JSON")
    ap.add_argument("--config"); ap.add_argument("--positive", metavar="NAME=MODEL")
    ap.add_argument("--tracking", nargs=2, metavar=("EXPERIMENT_DIR", "JSON"),
                    help="only the feature-tracking AUROCs of one finished experiment (run with --config) into JSON")
    a = ap.parse_args()
    choose(a.config, a.positive)
    if a.tracking:
        from binding_sae.validation import feature_tracking
        df = feature_tracking(CONFIG, a.tracking[0])
        Path(a.tracking[1]).write_text(json.dumps({"config": CONFIG, "command": "python3 " + " ".join(sys.argv),
                                                   "rows": df.to_dict("records")}, indent=1) + "\n")
        print(df.round(3).to_string()); sys.exit(0)
    if a.summarize: print(json.dumps(summarize(a.out, a.summarize)[1], indent=1)); sys.exit(0)
    if a.worker: one(a.worker[0], int(a.worker[1]), a.out); sys.exit(0)
    seeds = [int(s) for s in a.seeds.split(",")]
    from binding_sae.experiment import ensure_world
    from binding_sae.config import load_config
    ensure_world(load_config(CONFIG))  # once, before the workers share it
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    pass_on = [*(["--config", a.config] if a.config else []), *(["--positive", a.positive] if a.positive else [])]
    cmd = lambda n, s: [sys.executable, __file__, "--out", a.out, "--worker", n, str(s), *pass_on]
    with ThreadPoolExecutor(a.jobs) as ex:
        rcs = list(ex.map(lambda t: subprocess.run(cmd(*t), env=env, stdout=open(Path(a.out + f"_{t[0]}_{t[1]}.log"), "w"), stderr=subprocess.STDOUT).returncode,
                          [(n, s) for n in ORGANISMS for s in seeds]))
    print("worker exit codes:", rcs)
    from binding_sae.validation import validate
    r = validate(CONFIG, ORGANISMS, seeds, a.out)
    print(json.dumps(r["organisms"], indent=1))
