import json
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def test_index_notebook_matches_readme():
    "nbs/index.ipynb is README.md (run `python tools/sync_readme.py` after editing the README)."
    nb = json.loads((root / "nbs" / "index.ipynb").read_text())
    md = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert md == (root / "README.md").read_text()


def test_readme_holds_current_config_reference():
    "The README's config reference is the one generated from the schema (`python tools/readme_tables.py config`)."
    from binding_sae.config import config_reference
    assert config_reference() in (root / "README.md").read_text()


# ----------------------------------------------------------------------------------------------------------------
# The README's examples, run exactly as printed from the repository root

import os, re, shutil, subprocess, sys

SMOKE = root / "output" / "sae_experiments" / "smoke"  # the small experiment the examples use

def readme_blocks(section:str, lang:str) -> list[str]:
    "The fenced `lang` blocks of the README section titled `## section`, in order."
    text = (root / "README.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"^```{lang}\n(.*?)^```", body, re.S | re.M)

def seed_smoke():
    "Start the examples' experiment from the one nbdev_test built with the same config, when there is one (saves minutes)."
    built = root / "nbs" / "test_out" / "smoke"
    if not SMOKE.exists() and (built / "ablate.done.json").is_file():
        shutil.copytree(built, SMOKE, ignore=shutil.ignore_patterns("notebooks", ".*"))

def test_readme_papermill_example_runs_as_printed():
    "The papermill example writes its executed notebook and the report into the experiment folder, nothing into the root."
    [block] = [b for b in readme_blocks("Commands", "bash") if "papermill -k" in b]
    seed_smoke()
    report = SMOKE / "analysis" / "hypothesis_report.json"
    report.unlink(missing_ok=True)
    before = sorted(p.name for p in root.iterdir())
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=root, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in root.iterdir()) == before, "the example left files in the repository root"
    assert (SMOKE / "04_analyze.ipynb").is_file() and report.is_file()
    nb = json.loads((SMOKE / "04_analyze.ipynb").read_text())
    injected = "".join("".join(c["source"]) for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", []))
    assert f"config_path = \"{root / 'configs' / 'toy_smoke.yaml'}\"" in injected, injected

def test_readme_python_example_runs_as_printed():
    "The 'Use it from Python' block loads the SAE and the model, scores questions, runs one step and reads the report."
    [block] = readme_blocks("Use it from Python", "python")
    seed_smoke()
    r = subprocess.run([sys.executable, "-c", block], cwd=root, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert re.match(r"\d+ latents; logit difference true − false option: \[", lines[-2]), lines
    assert lines[-1].startswith(("SUPPORTED in ", "NOT SUPPORTED in ")), lines[-1]
