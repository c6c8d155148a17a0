"""Judge a trivial baseline set as if it were the selected set: the verdict must not call "take the biggest" a finding.

Reads an experiment's results/ablation_results.json, puts the per-question metrics of one baseline (chosen on `select`,
ablated on `test` like the selected set) in the place of the selected set's, drops that baseline from its own
comparison, and runs the analysis step's `build_report` with the experiment's evaluation settings.
The matched random sets stay those matched to the *selected* set, so the matching check is the selected set's, not
the baseline's; the baseline comparison, ceilings, controls and readout checks are its own.

usage: python3 bench/baseline_as_selected.py EXPERIMENT_DIR [--baseline top_mean_activation] [--out FILE]
"""
import argparse, copy, json
from pathlib import Path
from binding_sae.analyze import build_report
from binding_sae.config import load_config

def as_selected(ablation:dict, baseline:str) -> dict:
    "A copy of `ablation` whose selected set is `baseline` (removed from the baselines)."
    out = copy.deepcopy(ablation)
    for c in out["conditions"]:
        b = (c.get("baselines") or {}).pop(baseline, None)
        if b is None: raise SystemExit(f"condition {c['condition']} has no baseline {baseline!r}")
        c["selected"] = b
    return out

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment_dir"); p.add_argument("--baseline", default="top_mean_activation"); p.add_argument("--out")
    a = p.parse_args()
    exp = Path(a.experiment_dir)
    cfg = load_config(exp / "config.yaml")
    ev = cfg.evaluation
    ablation = json.loads((exp / "results" / "ablation_results.json").read_text())
    ko = exp / "results" / "knockout_results.json"
    kw = dict(knockout=json.loads(ko.read_text()) if ko.exists() else None, significance_level=ev.significance_level,
              primary_metric=ev.primary_metric, min_relative_drop=ev.min_relative_drop, max_match_smd=ev.max_match_smd,
              readout_max_share=ev.readout_max_share)
    rows = {}
    for name, abl in (("selected", ablation), (a.baseline, as_selected(ablation, a.baseline))):
        rep = build_report(abl, **kw)
        rows[name] = [{k: r.get(k) for k in ("condition", "relative_drop", "beats_baselines", "answer_readout",
                                             "hypothesis_supported", "verdict_reason")}
                      for r in rep["conditions"] if r["role"] == "binding"]
    print(json.dumps(rows, indent=1))
    if a.out: Path(a.out).write_text(json.dumps(dict(experiment=str(exp), baseline=a.baseline, rows=rows), indent=1))

if __name__ == "__main__": main()
