"""The toy pipeline at smoke size through the CLI with the papermill engine (the README's command shape):
every output listed in the README exists, a rerun skips every step, --force reruns them."""
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUTS = ["config.yaml", "splits.csv", "sae_checkpoint.pt", "sae/cfg.json", "sae/sae_weights.safetensors",
           "sae/metrics.json", "sae/history.json", "feature_catalog.json", "feature_stats.json",
           "results/ablation_results.json", "results/knockout_results.json", "results/interchange_results.json",
           "analysis/hypothesis_report.json",
           "feature_dashboard/index.html", "manifest.json"] + [f"notebooks/{n}" for n in
           ["01_train.ipynb", "02_identify.ipynb", "03_ablate.ipynb", "03_interchange.ipynb", "04_analyze.ipynb",
            "05_visualize.ipynb"]]

STEPS = ["train", "identify", "ablate", "knockout", "interchange", "analyze", "visualize"]

def cli(*args) -> str:
    "Run the CLI; its stdout (exit code 0 asserted)."
    r = subprocess.run([sys.executable, "-m", "binding_sae.cli", *map(str, args)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout

def run(*args) -> dict:
    "Run the CLI with --json: the manifest it prints."
    out = cli(*args, "--json")
    return json.loads(out[out.index("{"):])

def test_papermill_pipeline_skip_and_force(tmp_path):
    exp = tmp_path / "smoke"
    args = ["run", "--config", "configs/toy_smoke.yaml", "--experiment_dir", exp, "--set", "ablation.n_random_features=10"]
    m = run(*args)
    assert {s: v["status"] for s, v in m["steps"].items()} == dict.fromkeys(STEPS, "done")
    assert all(v["engine"] == "papermill" for v in m["steps"].values())
    missing = [o for o in OUTPUTS if not (exp / o).is_file()]
    assert not missing, missing
    report = json.loads((exp / "analysis/hypothesis_report.json").read_text())
    assert report["primary_metric"] == "logit_diff" and report["conditions"]
    stamp = (exp / "results/ablation_results.json").stat().st_mtime_ns
    out = cli(*args)                                 # same config: every step is skipped; without --json, the verdict text
    assert out.strip() and not out.lstrip().startswith("{"), out
    m = json.loads((exp / "manifest.json").read_text())
    assert {s: v["status"] for s, v in m["steps"].items()} == dict.fromkeys(STEPS, "skipped")
    assert (exp / "results/ablation_results.json").stat().st_mtime_ns == stamp
    m = run(*args, "--force", "--steps", "4,5")      # --force reruns (here the two cheapest steps)
    assert {s: v["status"] for s, v in m["steps"].items() if s in ("analyze", "visualize")} == {"analyze": "done", "visualize": "done"}
