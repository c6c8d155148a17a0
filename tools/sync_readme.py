"""Write nbs/index.ipynb from README.md (nbdev_readme needs Quarto, which is not available offline)."""
import json, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
def index_notebook() -> str:
    text = (root / "README.md").read_text()
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": text.splitlines(keepends=True)}],
          "metadata": {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}},
          "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"

if __name__ == "__main__":
    (root / "nbs" / "index.ipynb").write_text(index_notebook())
