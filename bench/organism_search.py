"""Train several routed-organism recipes side by side on one GPU, then judge each against the organism's targets.

    PYTHONPATH=$PWD python3 bench/organism_search.py train --out output/search        # every variant, in parallel
    PYTHONPATH=$PWD python3 bench/organism_search.py judge --out output/search --json search.json
    PYTHONPATH=$PWD python3 bench/organism_search.py pipeline --out output/search --model output/search/r2_s25

`train` runs one `binding-sae toy-train` per variant (its own process, 2 workers); each writes its checkpoint and
training record (held-out accuracy on 2,000 scenes of world seed 12345, knockout profiles on 300 scenes of seed 7, for
binding_choose and color_single) into <out>/<name>/. `judge` reads the records and checks the targets of the routed
organism: binding_choose, binding_query and control >= 0.98, relation >= 0.90, Image->Question <= -40 % at its strongest
layer, Image->Last > -10 % at every layer. `pipeline` runs the routed organism's pre-registered config on one model."""
import argparse, json, os, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BASE = ["--steps", "10000", "--probe_step", "10000", "--max_restarts", "0", "--log_every", "1000", "--eval_seed", "12345",
        "--knockout_n", "300", "--route_p_early", "1.0", "--route_switch", "0.7", "--single_fraction", "0.15",
        "--route_layer", "2"]
VARIANTS = {**{f"r2_s{s}": ["--seed", str(s), "--route_p_late", "0.5"] for s in (25, 26, 27, 28, 29, 30)},
            **{f"r2late08_s{s}": ["--seed", str(s), "--route_p_late", "0.8"] for s in (25, 30)}}
TARGETS = dict(accuracy={"binding_choose": 0.98, "binding_query": 0.98, "control": 0.98, "relation": 0.90},
               image_question_max_drop_pct=40.0, image_last_max_drop_pct=10.0)

def train(out, jobs):
    Path(out).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    def one(name):
        cmd = [sys.executable, "-m", "binding_sae.cli", "toy-train", "--out_dir", f"{out}/{name}", "--workers", "2", *BASE, *VARIANTS[name]]
        with open(f"{out}/{name}.log", "w") as log: return name, subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    with ThreadPoolExecutor(jobs) as ex: print(dict(ex.map(one, VARIANTS)))

def judge_record(rec):
    "The targets each trained model meets, from its training record."
    acc = rec["eval"]["accuracy"]
    curves = lambda k: rec.get(k, {}).get("curves", {})
    iq, il = curves("knockout").get("Image->Question", {}), curves("knockout").get("Image->Last", {})
    row = {"accuracy": acc, "knockout": {f: c.get("mean_pct_change") for f, c in curves("knockout").items()},
           "knockout_all_layers": {f: c.get("all_layers") for f, c in curves("knockout").items()},
           "knockout_single": {f: c.get("mean_pct_change") for f, c in curves("knockout_single").items()},
           "knockout_single_all_layers": {f: c.get("all_layers") for f, c in curves("knockout_single").items()},
           "command": rec["command"], "train_time_s": rec["train_time_s"]}
    checks = {f"{k} >= {v}": acc.get(k, 0.0) >= v for k, v in TARGETS["accuracy"].items()}
    if iq: checks["Image->Question strongest layer <= -40 %"] = min(iq["mean_pct_change"]) <= -TARGETS["image_question_max_drop_pct"]
    if il: checks["Image->Last > -10 % at every layer"] = min(il["mean_pct_change"]) > -TARGETS["image_last_max_drop_pct"]
    return {**row, "checks": checks, "meets_targets": bool(iq and il and all(checks.values()))}

def judge(out, dest):
    rows = {p.parent.name: judge_record(json.loads(p.read_text())) for p in sorted(Path(out).glob("*/training_record.json"))}
    result = {"targets": TARGETS, "variants": {k: ["binding-sae", "toy-train", *BASE, *v] for k, v in VARIANTS.items()}, "runs": rows}
    if dest: Path(dest).write_text(json.dumps(result, indent=1, sort_keys=True))
    for k, r in rows.items():
        print(k, "meets" if r["meets_targets"] else "misses", {c: v for c, v in r["checks"].items() if not v},
              "IQ", r["knockout"].get("Image->Question"), "single IQ all", r["knockout_single_all_layers"].get("Image->Question"))
    return result

def pipeline(model, exp):
    cmd = [sys.executable, "-m", "binding_sae.cli", "run", "--config", "configs/toy_routed.yaml", "--engine", "direct",
           "--experiment_dir", exp, "--set", f"model.name={model}"]
    return subprocess.run(cmd).returncode

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=("train", "judge", "pipeline")); ap.add_argument("--out", default="output/search")
    ap.add_argument("--jobs", type=int, default=len(VARIANTS)); ap.add_argument("--json"); ap.add_argument("--model")
    ap.add_argument("--experiment_dir")
    a = ap.parse_args()
    if a.what == "train": train(a.out, a.jobs)
    elif a.what == "judge": judge(a.out, a.json)
    else: sys.exit(pipeline(a.model, a.experiment_dir or f"{a.out}/pipeline_{Path(a.model).name}"))
