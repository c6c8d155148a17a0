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
