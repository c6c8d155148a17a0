"""The README's generated parts: every table of measured numbers, each printed from a results file.

    python3 tools/readme_tables.py config                                    # the config reference (from the schema)
    python3 tools/readme_tables.py results output/sae_experiments/demo       # the results table of a finished run
    python3 tools/readme_tables.py organisms bench/results/toy_eval_shortcut.json bench/results/toy_eval_routed.json
    python3 tools/readme_tables.py validation bench/results/validation_full.json          # per organism and seed
    python3 tools/readme_tables.py validation-rates bench/results/validation_full.json    # verdict rates with CIs
    python3 tools/readme_tables.py planted bench/results/planted_readout.json             # the planted readout cases
    python3 tools/readme_tables.py interchange bench/results/interchange_routed.json       # the interchange step's table
    python3 tools/readme_tables.py span bench/results/interchange_routed.json bench/results/interchange_routed_span.json  # one layer vs a span
    python3 tools/readme_tables.py hook bench/results/interchange_routed.json bench/results/interchange_routed_attn_out.json  # one row per site
    python3 tools/readme_tables.py update [README.md]    # rewrite every generated block of the README in place
    python3 tools/readme_tables.py check [README.md]     # exit 1 and name the blocks that differ from their source
    python3 tools/readme_tables.py record OUT.json -- binding-sae toy-eval --json ...  # run a command, keep its JSON
    python3 tools/readme_tables.py record-interchange EXPERIMENT_DIR OUT.json 'COMMAND THAT BUILT IT'

After `update`, `python3 tools/sync_readme.py && nbdev_clean --fname nbs/index.ipynb` copies the README into the docs.

A generated block of the README is

    <!-- generated: python3 tools/readme_tables.py KIND ARGS... -->

    ...the table...

    <!-- /generated -->

and `update` replaces what lies between the two comments with what the named command prints (paths are relative to
the repository root). `record` runs a command that prints JSON objects (one per line, or one indented object) and
writes them, with the command, the date and the package versions, into a results file under bench/results/;
`record-interchange` keeps the interchange step's summary of a finished experiment folder (with the command that built
the folder, and the versions and commit it ran at) in the same way.
"""
import datetime, json, platform, re, shlex, subprocess, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
TOOL = "python3 tools/readme_tables.py"
BLOCK = re.compile(r"^(<!-- generated: (?P<cmd>[^\n]*?) -->\n)(?P<body>.*?)^(<!-- /generated -->)$", re.S | re.M)


def _load(path) -> dict: return json.loads((root / path).read_text())
def _pct(v, d=1) -> str: return f"{100 * v:.{d}f} %"
def _signed_pct(v, d=1) -> str: return ("−" if round(100 * v, d) < 0 else "") + f"{abs(100 * v):.{d}f} %"


# ---------------------------------------------------------------------------------------------------------------
# One finished experiment

def results_table(exp) -> str:
    "Markdown table of a finished experiment: SAE quality, then one row per ablation condition of the report."
    exp = root / exp
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


# ---------------------------------------------------------------------------------------------------------------
# Results files written by `record`

def record(out, cmd:list) -> dict:
    "Run `cmd` (a `binding-sae …` command runs as `python3 -m binding_sae.cli …`) and write its printed JSON objects to `out`."
    run = [sys.executable, "-m", "binding_sae.cli", *cmd[1:]] if cmd[0] == "binding-sae" else cmd
    p = subprocess.run(run, cwd=root, capture_output=True, text=True)
    if p.returncode: sys.exit(f"{shlex.join(cmd)} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    dec, text, objs, i = json.JSONDecoder(), p.stdout, [], 0
    while (i := text.find("{", i)) >= 0:  # every top-level JSON object printed, in order
        o, i = dec.raw_decode(text, i)
        objs.append(o)
    from importlib.metadata import version
    rec = dict(command=shlex.join(cmd), date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
               machine=f"{platform.machine()} CPU" if "--device" not in cmd else platform.machine(),
               versions={k: version(k) for k in ("torch", "transformers")}, output=objs)
    Path(out).write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
    return rec


def _eval_parts(rec:dict):
    "(accuracy per family, knockout profile or None) of a recorded `toy-eval --json` run."
    acc = rec["output"][-1]
    ko = next((o["knockout"] for o in rec["output"] if "knockout" in o), None)
    return acc, ko


FAMILIES = ("binding_choose", "binding_query", "shape_query", "control", "relation")

def _knockout_cell(c:dict) -> str:
    "One flow's knockout profile in words: the layers with a change of at least 5 %, or the largest |change|."
    big = [(l, v, lo, hi) for l, v, lo, hi in zip(c["layers"], c["mean_pct_change"], c["ci_low"], c["ci_high"]) if abs(v) >= 5]
    top = max(abs(v) for v in c["mean_pct_change"])
    if not big: return "0 % at every layer" + (f" (\\|Δ\\| ≤ {top:.2g} %)" if top else "")
    n = lambda v: f"{v:.0f}".replace("-", "−")
    return ", ".join(f"{n(v)} % (L{l}; CI {n(lo)} to {n(hi)})" for l, v, lo, hi in big)


def organisms_table(*paths) -> str:
    "Accuracy per family and the knockout profile of each organism, from recorded `toy-eval --json --knockout_n N` runs (bench/results/toy_eval_NAME.json)."
    out = ["| organism | " + " / ".join(FAMILIES) + " | Image→Question | Image→Last | Question→Last |", "|---|---|---|---|---|"]
    for path in paths:
        name = Path(path).stem.removeprefix("toy_eval_").replace("_", "-")
        acc, ko = _eval_parts(_load(path))
        cells = [_knockout_cell(ko["curves"][f]) for f in ("Image->Question", "Image->Last", "Question->Last")]
        out.append(f"| {name} | " + " / ".join(f"{acc[f]:.3f}" for f in FAMILIES) + " | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# bench/validation_full.py

def _failed(r:dict) -> str:
    names = {"readout_control": "readout control", "answer_share": "answer share", "baselines": "baselines",
             "matching": "matching", "min_effect": "bar", "significance": "significance", "specificity": "controls",
             "ceiling": "ceiling", "direction": "direction"}
    f = [names.get(k, k) for k, v in r["checks"].items() if v == "failed"]
    return "supported" if r["supported"] else f"not supported ({', '.join(f) or 'not measured'})"


def validation_table(path) -> str:
    "One row per run of the positive-control organism, one summary row of the negative control (its ranges)."
    d = _load(path)
    out = ["| organism | seed | relative drop | ceiling | beats every trivial baseline | control drop | `color_single` drop | R | verdict (failed checks) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for org, o in d["organisms"].items():
        runs = sorted((r for r in d["runs"] if r["organism"] == org), key=lambda r: r["seed"])
        if o["positive"]:
            for r in runs:
                out.append(f"| {org} | {r['seed']} | {r['relative_drop']:.3f} | {r['ceiling_relative_drop']:.2f} | "
                           f"{'yes' if r['beats_baselines'] else 'no'} | {_signed_pct(r['control_relative_drop'])} | "
                           f"{r['readout_relative_drop']:.3f} | {r['knockout_recovery']:.2f} | {_failed(r)} |")
        else:
            rng = lambda k, d: f"{min(r[k] for r in runs):.{d}f}–{max(r[k] for r in runs):.{d}f}"
            seeds = sorted(r["seed"] for r in runs)
            reasons = {r["verdict_reason"].split(":")[0] for r in runs if not r["supported"]}
            verdict = ("not supported: " + "; ".join(sorted(reasons))) if len(reasons) == 1 else \
                      f"{sum(r['supported'] for r in runs)} of {len(runs)} supported"
            out.append(f"| {org} | {seeds[0]}–{seeds[-1]} | {rng('relative_drop', 3)} | {rng('ceiling_relative_drop', 3)} | "
                       f"{sum(r['beats_baselines'] for r in runs)} of {len(runs)} | "
                       f"≤ {_pct(max(abs(r['control_relative_drop']) for r in runs), 2)} | "
                       f"≤ {_pct(max(abs(r['readout_relative_drop']) for r in runs))} | — (knockout ≈ 0) | {verdict} |")
    return "\n".join(out) + "\n"


def validation_rates_table(path) -> str:
    "Verdict rates per organism with their 95 % CIs: the full verdict, and every check but the two answer-readout checks."
    d = _load(path)
    orgs = list(d["organisms"].items())
    head = " | ".join(f"{k} ({'positive' if o['positive'] else 'negative'} control)" for k, o in orgs)
    ci = lambda s: f"CI {s['ci_low']:.2g}–{s['ci_high']:.2g}"
    n = lambda s: f"{s['n_supported']} / {s['n_runs']}"
    out = [f"| | {head} |", "|---|" + "---|" * len(orgs)]
    out.append("| full verdict supported | " + " | ".join(
        f"{n(o['supported'])} ({'95 % ' if o['positive'] else 'false positives; '}{ci(o['supported'])})" for _, o in orgs) + " |")
    out.append("| every check but the two answer-readout checks | " + " | ".join(
        f"**{n(o['necessary'])}** (power; {ci(o['necessary'])})" if o["positive"] else n(o["necessary"]) for _, o in orgs) + " |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# tools/planted_readout.py (the planted cases of nbs/19_validation.ipynb)

PLANTED = {"asked shape, layer 1": "the asked shape after layer 1 (the pointer the colour lookup needs)",
           "answer colour, layer 2": "the answer colour after layer 2",
           "purple answers, layer 2": "purple answers only, after layer 2"}

def planted_table(path) -> str:
    "One row per planted set: its drops, the largest answer share, and which readout check flags it."
    d = _load(path)
    out = ["| planted set | binding drop | single-object drop | largest answer share | verdict's readout flag |",
           "|---|---|---|---|---|"]
    for k in sorted(d["cases"], key=lambda k: (list(PLANTED) + [k]).index(k)):
        r = d["cases"][k]
        failed = [w for c, w in (("readout_control", "single-object control"), ("answer_share", "answer share"))
                  if r["checks"][c] == "failed"]
        share = f"{100 * r['answer_max_share']:.0f} %" + (f" ({r['answer_max_value']})" if r["checks"]["answer_share"] == "failed" else "")
        out.append(f"| {PLANTED.get(k, k)} | {_pct(r['relative_drop'])} | {_pct(r['readout_relative_drop'])} | {share} | "
                   f"{'readout (' + ', '.join(failed) + ')' if r['answer_readout'] else 'not readout'} |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# The interchange step of one experiment

def record_interchange(exp, out, run_command:str) -> dict:
    "Write the interchange summary of experiment folder `exp` (per task: swap rates, baselines, single features) to `out`."
    exp = Path(exp)
    r = json.loads((exp / "results/interchange_results.json").read_text())
    done = json.loads((exp / "interchange.done.json").read_text())
    rep = json.loads((exp / "analysis/hypothesis_report.json").read_text())
    meta = {k: r["metadata"][k] for k in ("layer", "position_type", "split", "n_random_sets", "min_attainable_p", "pairs",
                                           "matching", "selected_feature_ids", "seed", "model")}
    meta["hook"] = r["metadata"].get("hook", "resid_post")  # the site's hook (the metadata names it when not resid_post)
    row = next(c for c in rep["conditions"] if c["condition"] == rep["primary_condition"])
    cat = json.loads((exp / "feature_catalog.json").read_text())
    ko = rep.get("knockout_recovery") or {}
    ablation = dict(condition=row["condition"], relative_drop=row["relative_drop"],  # the step-3 headline beside the swap
                    relative_drop_ci=[-row["ci_high"] / row["mean_baseline"], -row["ci_low"] / row["mean_baseline"]]
                    if row["ci_low"] is not None and row["mean_baseline"] else None,
                    R=ko.get("R"), R_ci=[ko.get("ci_low"), ko.get("ci_high")], R_layers=ko.get("layers"),
                    verdict=rep["summary"]["verdict"],
                    selected_layers=[f.get("layer", r["metadata"]["layer"]) for f in cat["features"]])
    rec = dict(command=[run_command, f"{TOOL} record-interchange {exp} {out} {shlex.quote(run_command)}"],
               config=json.loads((exp / "manifest.json").read_text())["config"], versions=done["versions"],
               wall_s=done["wall_s"], metadata=meta, headline=rep["summary"]["interchange_headline"], ablation=ablation,
               tasks=[dict(task=c["task"], summary=c["summary"], per_feature=c["per_feature"]) for c in r["conditions"]])
    Path(out).write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
    return rec


BASELINE_NAMES = {"top_mean_activation": "top mean activation", "top_firing_rate": "top firing rate",
                  "top_decoded_norm": "top decoded norm", "best_random_on_select": "best random on `select`"}

def interchange_table(path, task="binding_choose") -> str:
    "What swapping each set in from the twin does: share of pairs whose answer swaps, mean normalized shift."
    d = _load(path)
    m, s = d["metadata"], next(t for t in d["tasks"] if t["task"] == task)["summary"]
    f2 = lambda v: "" if v is None else f"{v:.2f}"
    lo, hi = s["swap_rate_ci"]
    bls = {k: s["baselines"][k] for k in sorted(s["baselines"], key=lambda k: (list(BASELINE_NAMES) + [k]).index(k))}
    above = all(b["difference_ci"][0] > 0 for b in bls.values())
    singles = [v["swap_rate"] for v in next(t for t in d["tasks"] if t["task"] == task)["per_feature"].values()]
    where = {"last": "the last position"}.get(m["position_type"], f"the {m['position_type']} positions")
    out = ["| swapped in from the twin | pairs whose answer swaps | mean normalized shift |", "|---|---|---|",
           f"| the {len(m['selected_feature_ids'])} selected features | **{_pct(s['swap_rate'])}** (95 % CI "
           f"{100 * lo:.1f}–{100 * hi:.1f} %) | {f2(s['mean_normalized_shift'])} |",
           f"| {m['n_random_sets']} matched random sets | mean {_pct(s['random_swap_rate_mean'])}, largest "
           f"{_pct(s['random_swap_rate_max'])} (permutation p {s['permutation_p']:.2g} = 1/{m['n_random_sets'] + 1}"
           f"{'' if abs(s['permutation_p'] - m['min_attainable_p']) < 1e-12 else ', not the smallest attainable'}) | "
           f"{f2(s['random_mean_normalized_shift'])} |",
           "| " + " / ".join(BASELINE_NAMES.get(k, k) for k in bls) + " | " + " / ".join(_pct(b["swap_rate"]) for b in bls.values())
           + (" (each paired CI of the difference above 0)" if above else " (not every paired CI of the difference above 0)") + " | |",
           f"| any one selected feature alone | ≤ {_pct(max(singles))} | |",
           f"| the whole residual at {where} (upper bound) | {100 * s['full_residual_swap_rate']:.0f} % | "
           f"{f2(s['full_residual_mean_normalized_shift'])} |",
           *([f"| the whole residual at the other question positions | {100 * s['other_positions_swap_rate']:.0f} % | "
              f"{f2(s['other_positions_mean_normalized_shift'])} |"] if s["other_positions_swap_rate"] is not None else []),
           f"| the selected features from a same-answer scene (control) | {100 * s['same_answer_flip_rate']:.0f} % | |"]
    return "\n".join(out) + "\n"


def _verdicts(d) -> str:
    "The ablation's and the interchange's verdicts of a recorded experiment, in a few words."
    return ("supported" if d["ablation"]["verdict"].startswith("supported") else "not supported") + " / " + \
           ("carries the binding" if "CARRIES THE BINDING" in d["headline"] else "does not show it")


def _recorded_row(path, task:str) -> tuple:
    "(record, the task's interchange summary, the layers, the cells 'drop [CI] | R [CI] | swap rate [CI]') of a recorded experiment (`record-interchange`)."
    d = _load(path)
    a, m = d["ablation"], d["metadata"]
    s = next(t for t in d["tasks"] if t["task"] == task)["summary"]
    rng = lambda v: "–" if not v or v[0] is None else f"{v[0]:.2f}–{v[1]:.2f}"
    (lo, hi), R = s["swap_rate_ci"], "–" if a["R"] is None else f"{a['R']:.2f}"
    cells = (f"{a['relative_drop']:.3f} [{rng(a['relative_drop_ci'])}] | {R} [{rng(a['R_ci'])}] | "
             f"{_pct(s['swap_rate'])} [{100 * lo:.1f}–{100 * hi:.1f} %]")
    return d, s, m["layer"] if isinstance(m["layer"], list) else [m["layer"]], cells


def span_table(*paths, task="binding_choose") -> str:
    "One row per recorded experiment (`record-interchange`): model, site, layers, where the budget went, drop, R, swap rate, verdicts."
    out = ["| run | model | site | layers | selected features per layer | relative drop [95 % CI] | R [95 % CI] | swap rate [95 % CI] | "
           "verdicts (ablation / interchange) |", "|---|---|---|---|---|---|---|---|---|"]
    for path in paths:
        d, _, layers, cells = _recorded_row(path, task)
        m, per = d["metadata"], ", ".join(f"L{l}: {d['ablation']['selected_layers'].count(l)}" for l in layers)
        out.append(f"| `{d['config']}` | `{m['model']}` | `{m.get('hook', 'resid_post')}` | {', '.join(map(str, layers))} | {per} | "
                   f"{cells} | {_verdicts(d)} |")
    return "\n".join(out) + "\n"


def hook_table(*paths, task="binding_choose") -> str:
    "One row per recorded experiment (`record-interchange`) of one layer at different sites: hook, drop, R, swap rate and the random sets' match."
    out = ["| site (`harvest.hook`) | layer | relative drop [95 % CI] | R [95 % CI] | swap rate [95 % CI] | random sets' swap rate (mean / largest) | "
           "matched random sets (largest \\|SMD\\|, pool) | verdicts (ablation / interchange) |", "|---|---|---|---|---|---|---|---|"]
    for path in paths:
        d, s, layers, cells = _recorded_row(path, task)
        m = d["metadata"]
        mt = m["matching"]
        out.append(f"| `{m.get('hook', 'resid_post')}` | {', '.join(map(str, layers))} | {cells} | "
                   f"{_pct(s['random_swap_rate_mean'])} / {_pct(s['random_swap_rate_max'])} | "
                   f"{mt['max_abs_smd']:.2f} ({'poor' if mt['poor'] else 'ok'}), {mt['n_pool']} latents | {_verdicts(d)} |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Generated blocks of the README

KINDS = {"config": None, "results": results_table, "organisms": organisms_table, "validation": validation_table,
         "validation-rates": validation_rates_table, "planted": planted_table, "interchange": interchange_table,
         "span": span_table, "hook": hook_table}

def table(cmd:str) -> str:
    "What `cmd` (`python3 tools/readme_tables.py KIND ARGS…`) prints."
    if not cmd.startswith(TOOL + " "): raise ValueError(f"a generated block must name `{TOOL} KIND ARGS`, not {cmd!r}")
    kind, *args = shlex.split(cmd[len(TOOL) + 1:])
    if kind == "config":
        from binding_sae.config import config_reference
        return config_reference()
    if kind not in KINDS: raise ValueError(f"unknown table {kind!r} in {cmd!r}; known: {', '.join(KINDS)}")
    return KINDS[kind](*args)


def rendered(cmd:str) -> str:
    "The body of a generated block: the table between blank lines (so that every Markdown reader ends it there)."
    return "\n" + table(cmd) + "\n"


def blocks(text:str) -> list:
    "(command, body) of every generated block of `text`, in order."
    return [(m["cmd"], m["body"]) for m in BLOCK.finditer(text)]


def update(text:str) -> str:
    "`text` with every generated block's body replaced by what its command prints now."
    return BLOCK.sub(lambda m: m.group(1) + rendered(m["cmd"]) + m.group(4), text)


if __name__ == "__main__":
    a = sys.argv[1:]
    if not a: sys.exit(__doc__)
    if a[0] in ("update", "check"):
        readme = root / (a[1] if len(a) > 1 else "README.md")
        text = readme.read_text()
        new = update(text)
        if a[0] == "update":
            if new != text: readme.write_text(new)
            print(f"{readme.name}: {len(blocks(text))} generated blocks, {'rewritten' if new != text else 'unchanged'}")
        else:
            stale = [c for (c, b), (_, b2) in zip(blocks(text), blocks(new)) if b != b2]
            for c in stale: print(f"stale: {c}")
            sys.exit(1 if stale else 0)
    elif a[0] == "record-interchange":
        if len(a) != 4: sys.exit(f"usage: {TOOL} record-interchange EXPERIMENT_DIR OUT.json 'COMMAND THAT BUILT IT'")
        record_interchange(*a[1:])
    elif a[0] == "record":
        if len(a) < 4 or a[2] != "--": sys.exit(f"usage: {TOOL} record OUT.json -- COMMAND ...")
        record(a[1], a[3:])
    else:
        print(table(shlex.join([*shlex.split(TOOL), *a])), end="")
