"""The real LLaVA-1.5-7B config end to end on one GPU, with stand-ins for what the GPU machine cannot download.

A random-weight LLaVA-1.5-7B-shaped model folder (`binding_sae.fixtures.random_llava('llava-1.5-7b')`, saved with
its processor) stands in for `llava-hf/llava-1.5-7b-hf`, and synthetic-world images (one per GQA image id, cycled
through a 200-scene world) stand in for GQA's images. Everything else is `configs/llava15_7b.yaml` as shipped, plus
the `--set` overrides given here. Both stand-ins are written once under WORK and reused; the run itself is
`binding-sae run` (direct engine), so a second call resumes where a first one was stopped. Prints each step's
wall-clock time from the manifest.

    PYTHONPATH=$PWD python3 bench/llava7b_random_pipeline.py --work /tmp/l7b --set training.n_tokens=4000000
"""
import argparse, json, shutil, subprocess, sys, time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "llava15_7b.yaml"


def model_folder(work:Path) -> Path:
    "The random-weight 7B-shaped model and its processor, saved once."
    out = work / "model"
    if (out / "config.json").exists(): return out
    from binding_sae.fixtures import random_llava
    t = time.perf_counter()
    vlm = random_llava("llava-1.5-7b", device="cuda", dtype="bfloat16", attn_implementation="sdpa")
    vlm.model.save_pretrained(out); vlm.processor.save_pretrained(out)
    print(f"random 7B-shaped model saved to {out} in {time.perf_counter() - t:.1f} s", flush=True)
    return out


def image_folder(work:Path) -> Path:
    "One synthetic-world image per image id of the config's three question CSVs."
    out = work / "images"
    if out.is_dir(): return out
    from binding_sae.config import load_config
    from binding_sae.world import make_world
    cfg = load_config(CONFIG)
    d = cfg.dataset
    ids = pd.concat([pd.read_csv(cfg.path(p), dtype=str)["img_id"] for p in (d.refined_dataset, d.control_dataset, d.relation_dataset)])
    world = make_world(work / "world", 200, 0).parent / "images"
    pngs = sorted(world.glob("*.png"))
    tmp = work / "images.tmp"; tmp.mkdir(parents=True, exist_ok=True)
    for k, i in enumerate(dict.fromkeys(ids)): shutil.copy(pngs[k % len(pngs)], tmp / f"{i}.png")
    tmp.rename(out)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/l7b", help="folder for the stand-ins and the experiment")
    ap.add_argument("--set", action="append", default=[], help="extra config overrides (KEY=VALUE)")
    ap.add_argument("--exp", default="exp", help="experiment folder name under WORK")
    ap.add_argument("--out", help="write the manifest's step times as JSON here")
    a = ap.parse_args()
    work = Path(a.work); work.mkdir(parents=True, exist_ok=True)
    model, images = model_folder(work), image_folder(work)
    sets = [f"model.name={model}", f"dataset.image_folder={images}", *a.set]
    cmd = [sys.executable, "-m", "binding_sae.cli", "run", "--config", str(CONFIG), "--experiment_dir", str(work / a.exp),
           "--engine", "direct", *[x for s in sets for x in ("--set", s)]]
    print("command:", " ".join(cmd), flush=True)
    t = time.perf_counter()
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    mf = work / a.exp / "manifest.json"
    m = json.loads(mf.read_text()) if mf.exists() else {}
    steps = {k: {kk: v.get(kk) for kk in ("status", "wall_s")} for k, v in m.get("steps", {}).items()}
    res = dict(rc=rc, wall_s=time.perf_counter() - t, device=m.get("device"), overrides=a.set, steps=steps)
    print(json.dumps(res, indent=1))
    if a.out: Path(a.out).write_text(json.dumps(res, indent=1))
    sys.exit(rc)


if __name__ == "__main__":
    main()
