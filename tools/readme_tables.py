"""Print the README's generated parts: the config reference table, and the results table of an experiment.

    python tools/readme_tables.py config                              # the config reference (from the schema)
    python tools/readme_tables.py results output/sae_experiments/demo # the results table of a finished run
"""
import json, sys
from pathlib import Path


def results_table(exp) -> str:
    "Markdown table of a finished experiment: SAE quality, then one row per ablation condition of the report."
    exp = Path(exp)
    m = json.loads((exp / "sae/metrics.json").read_text())
    r = json.loads((exp / "analysis/hypothesis_report.json").read_text())
    out = ["| SAE (held-out) | FVU | L0 | dead fraction | logit-diff recovered (spliced) | KL recovered |", "|---|---|---|---|---|---|",
           f"| layer {m['layer']}{' ' + m['hook'] if m.get('hook') else ''}, {m['positions']} positions | {m['fvu']:.3f} | {m['l0']:.1f} | {m['dead_fraction']:.3f} | "
           f"{m['logit_diff_recovered']:.3f} | {m['kl_recovered']:.3f} |", "",
           "| condition (position / mode / scale / task) | n | baseline logit diff | mean effect [95% CI] | relative drop | "
           "permutation p | Holm p | random sets dropping < 10 % | supported |",
           "|---|---|---|---|---|---|---|---|---|"]
    for c in r["conditions"]:
        if not c.get("n_questions"): continue
        f = lambda v, d=3: "–" if v is None else f"{v:.{d}f}"
        out.append(f"| {c['condition'].replace('|', ' / ')} | {c['n_questions']} | {f(c['mean_baseline'])} | {f(c['mean_effect'])} "
                   f"[{f(c['ci_low'])}, {f(c['ci_high'])}] | {f(c['relative_drop'])} | {f(c['permutation_p'], 4)} | "
                   f"{f(c['holm_p'], 4)} | {f(c['random_drop_fraction_below_10pct'], 2)} | {c['hypothesis_supported']} |")
    out += ["", f"Verdict: {r['summary']['verdict']}"]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    if sys.argv[1] == "config":
        from binding_sae.config import config_reference
        print(config_reference(), end="")
    else:
        print(results_table(sys.argv[2]), end="")
