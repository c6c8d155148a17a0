"""The pipeline under its two engines, side by side on the CPU: `binding-sae run --engine direct` and
`--engine papermill` on the same config into two fresh folders, one after the other, with the world generated
beforehand. Prints and writes the wall time of each run and of each step (from the manifests) and the ratio
papermill / direct. The papermill engine executes each step notebook's record copy (`binding_sae.pipeline.run_copy`:
the method and the step, not the unit tests), so the ratio measures the engine's own cost.

    python3 bench/bench_engines.py --config configs/toy.yaml --out bench/results/engines_toy.json
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/toy.yaml")
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    ap.add_argument("--lock", default=None, help="a lock file to hold for each run (flock), so other work can run between them")
    a = ap.parse_args()
    from binding_sae.config import load_config
    from binding_sae.experiment import ensure_world
    ensure_world(load_config(ROOT / a.config))
    res = {"config": a.config, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as d:
        for engine in ("direct", "papermill"):
            if a.lock:
                import fcntl
                with open(a.lock) as f:
                    fcntl.flock(f, fcntl.LOCK_EX); res[engine] = run(a.config, Path(d) / engine, engine)
            else: res[engine] = run(a.config, Path(d) / engine, engine)
            print(engine, json.dumps(res[engine]), flush=True)
    res["ratio_papermill_vs_direct"] = res["papermill"]["wall_s"] / res["direct"]["wall_s"]
    print(f"papermill / direct: {res['ratio_papermill_vs_direct']:.3f} ({res['papermill']['wall_s']:.0f} s vs {res['direct']['wall_s']:.0f} s)")
    if a.out: Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
