"""The pipeline under its two engines, side by side on the CPU: `binding-sae run --engine direct` and
`--engine papermill` on the same config into two fresh folders, one after the other, with the world generated
beforehand, `--repeats` pairs back to back. Prints and writes the wall time of each run and of each step (from the
manifests) and the ratio papermill / direct of each pair and their median. The papermill engine executes each step notebook's record copy (`binding_sae.pipeline.run_copy`:
the method and the step, not the unit tests), so the ratio measures the engine's own cost.

    python3 bench/bench_engines.py --config configs/toy.yaml --repeats 3 --out bench/results/engines_toy.json
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(config:str, exp:Path, engine:str) -> dict:
    cmd = [sys.executable, "-m", "binding_sae.cli", "run", "--config", config, "--experiment_dir", str(exp), "--engine", engine]
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode: sys.exit(f"{engine} run failed ({r.returncode}):\n{r.stderr[-3000:]}")
    m = json.loads((exp / "manifest.json").read_text())
    return {"wall_s": wall, "steps_wall_s": {k: v.get("wall_s") for k, v in m["steps"].items()}}


def summarize(res:dict) -> dict:
    "The median ratio over the pairs, and the fastest run of each engine (in place)."
    import statistics
    res["ratio_papermill_vs_direct"] = statistics.median(p["ratio_papermill_vs_direct"] for p in res["pairs"])
    res["direct"], res["papermill"] = (min(p[e]["wall_s"] for p in res["pairs"]) for e in ("direct", "papermill"))
    res["ratio_fastest_papermill_vs_fastest_direct"] = res["papermill"] / res["direct"]
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/toy.yaml")
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    ap.add_argument("--repeats", type=int, default=1, help="direct/papermill pairs to run (the median ratio is reported)")
    ap.add_argument("--lock", default=None, help="a lock file to hold for each run (flock), so other work can run between them")
    a = ap.parse_args()
    from binding_sae.config import load_config
    from binding_sae.experiment import ensure_world
    ensure_world(load_config(ROOT / a.config))
    res = {"config": a.config, "cpus": os.cpu_count(), "pairs": []}
    with tempfile.TemporaryDirectory() as d:
        for k in range(a.repeats):  # pairs run back to back, so a slow spell of the machine hits both engines alike
            pair = {}
            for engine in ("direct", "papermill"):
                exp = Path(d) / f"{engine}{k}"
                if a.lock:
                    import fcntl
                    with open(a.lock) as f:
                        fcntl.flock(f, fcntl.LOCK_EX); pair[engine] = run(a.config, exp, engine)
                else: pair[engine] = run(a.config, exp, engine)
                print(engine, json.dumps(pair[engine]), flush=True)
            pair["ratio_papermill_vs_direct"] = pair["papermill"]["wall_s"] / pair["direct"]["wall_s"]
            print(f"pair {k + 1}: papermill / direct {pair['ratio_papermill_vs_direct']:.3f} "
                  f"({pair['papermill']['wall_s']:.0f} s vs {pair['direct']['wall_s']:.0f} s)", flush=True)
            res["pairs"].append(pair)
    summarize(res)
    ratios = sorted(p["ratio_papermill_vs_direct"] for p in res["pairs"])
    print(f"papermill / direct, median of {len(ratios)} pairs: {res['ratio_papermill_vs_direct']:.3f} (range {ratios[0]:.3f}-{ratios[-1]:.3f}); "
          f"fastest direct {res['direct']:.0f} s, fastest papermill {res['papermill']:.0f} s")
    if a.out: Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
