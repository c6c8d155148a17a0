"""Run the planted readout cases of `nbs/19_validation.ipynb` and write their verdict rows to a results file.

    python3 tools/planted_readout.py bench/results/planted_readout.json

The cases are computed by the notebook's own cells (the ones that define `planted_sae` and `planted_verdict` and build
`cases`), executed unchanged in `nbs/` as nbdev_test runs them: nothing of the computation is written twice. CPU, a few
seconds; `python3 tools/readme_tables.py planted FILE` prints the README's table from the file.
"""
import datetime, json, os, platform, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
NB = root / "nbs" / "19_validation.ipynb"
KEYS = ("relative_drop", "readout_relative_drop", "answer_max_share", "answer_max_value", "answer_readout", "checks",
        "n_questions", "verdict_reason")


def planted_cells() -> list:
    "Sources of the notebook's code cells from the one defining `planted_sae` to the one building `cases`."
    cells = [("".join(c["source"])) for c in json.loads(NB.read_text())["cells"] if c["cell_type"] == "code"]
    a = next(i for i, s in enumerate(cells) if "def planted_sae" in s)
    b = next(i for i, s in enumerate(cells) if "cases = {" in s)
    return cells[a:b + 1]


def planted_cases() -> dict:
    "The notebook's `cases`: the analysis row of each planted set, reduced to what the README reports."
    import numpy as np, pandas as pd, torch
    ns, cwd = dict(np=np, pd=pd, torch=torch), os.getcwd()
    os.chdir(root / "nbs")
    try:
        for src in planted_cells(): exec(compile(src, str(NB), "exec"), ns)
    finally: os.chdir(cwd)
    return {k: {f: r.get(f) for f in KEYS} for k, r in ns["cases"].items()}


if __name__ == "__main__":
    if len(sys.argv) != 2: sys.exit(__doc__)
    from importlib.metadata import version
    rec = dict(command=f"python3 tools/planted_readout.py {sys.argv[1]}", source="nbs/19_validation.ipynb (planted cases)",
               date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"), machine=f"{platform.machine()} CPU",
               versions={k: version(k) for k in ("torch", "transformers")}, cases=planted_cases())
    Path(sys.argv[1]).write_text(json.dumps(rec, indent=1, sort_keys=True, default=lambda o: o.item()) + "\n")
