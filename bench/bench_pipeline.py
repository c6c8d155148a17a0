"""The whole pipeline through the real CLI on a random-weight model, with the synthetic world standing in for GQA.

`binding-sae run` (direct engine) with `configs/llava15_7b.yaml` as shipped except for what the GPU machine cannot
download: the model is a random-weight LLaVA-1.5-7B-shaped folder (`llava7b_random_pipeline.model_folder`) and the
questions are a synthetic world of `--scenes` scenes (about one binding_choose question per scene, plus control and
relation questions of the same scenes; the processor resizes the 64-pixel images to 336). Reads each step's wall time,
GPU memory peak (`<step>.done.json`) and question counts, and prints questions/s per step.

    PYTHONPATH=$PWD python3 bench/bench_pipeline.py --scenes 12000 --out bench/results/pipeline_7b.json   # GPU
    PYTHONPATH=$PWD python3 bench/bench_pipeline.py --model tiny --scenes 60 --set training.n_tokens=20000 \\
        --set feature_identification.top_k=2 --set ablation.n_random_features=20 --set feature_identification.min_activation=0.0
        # a CPU check that it runs (tiny random model)
"""
import argparse, json, subprocess, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llava7b_random_pipeline import CONFIG, ROOT, model_folder  # noqa: E402


def tiny_folder(work:Path) -> Path:
    "A tiny random LLaVA (real tokenizer and processor) saved once: for checking the script on a CPU."
    out = work / "tiny_model"
    if (out / "config.json").exists(): return out
    from binding_sae.fixtures import random_llava
    vlm = random_llava("tiny", device="cpu", dtype="float32")
    vlm.model.save_pretrained(out); vlm.processor.save_pretrained(out)
    return out


def world_overrides(work:Path, scenes:int) -> list:
    "`--set` overrides that replace the GQA CSVs with a synthetic world of `scenes` scenes (generated on first use)."
    w = work / f"world_n{scenes}"
    return [f"dataset.refined_dataset={w}/questions.csv", f"dataset.image_folder={w}/images", "dataset.task_types=[binding_choose]",
            "dataset.control_dataset=null", "dataset.control_task_types=[control]", "dataset.relation_dataset=null",
            "dataset.relation_task_types=[relation]", f"dataset.world={{n_scenes: {scenes}, seed: 0}}"]


def step_table(exp:Path) -> dict:
    "Per step: wall time, GPU memory peak, its question counts and questions/s (from `<step>.done.json`)."
    out = {}
    for f in sorted(exp.glob("*.done.json")):
        d = json.loads(f.read_text()); c = d.get("counts", {})
        n = next((c[k] for k in ("n_train_questions", "n_select", "n_test_questions", "n_questions", "n_pairs") if k in c), None)
        out[d["step"]] = {"wall_s": d.get("wall_s"), "gpu_peak_gib": d.get("gpu_peak_gib"), "counts": c,
                          "questions_per_s": n / d["wall_s"] if n and d.get("wall_s") else None}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llava-1.5-7b", choices=["llava-1.5-7b", "tiny"])
    ap.add_argument("--scenes", type=int, default=12000, help="world scenes (about as many binding questions)")
    ap.add_argument("--work", default="/tmp/bench_pipeline", help="folder for the model, the world and the experiment")
    ap.add_argument("--set", action="append", default=[], help="extra config overrides (KEY=VALUE)")
    ap.add_argument("--out", help="write the numbers as JSON here")
    a = ap.parse_args()
    work = Path(a.work); work.mkdir(parents=True, exist_ok=True)
    model = tiny_folder(work) if a.model == "tiny" else model_folder(work)
    sets = [f"model.name={model}", *world_overrides(work, a.scenes), *a.set]
    if a.model == "tiny": sets += ["model.d_model=null", "model.target_layer=1", "model.dtype=float32", "model.device=cpu"]
    import hashlib
    exp = work / f"exp_{a.model}_{a.scenes}_{hashlib.sha1(' '.join(sets).encode()).hexdigest()[:8]}"  # other overrides, another folder
    cmd = [sys.executable, "-m", "binding_sae.cli", "run", "--config", str(CONFIG), "--experiment_dir", str(exp),
           "--engine", "direct", *[x for s in sets for x in ("--set", s)]]
    print("command:", " ".join(cmd), flush=True)
    t = time.perf_counter()
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    res = dict(rc=rc, model=a.model, scenes=a.scenes, overrides=a.set, wall_s=time.perf_counter() - t, steps=step_table(exp))
    print(json.dumps(res, indent=1))
    if a.out: Path(a.out).write_text(json.dumps(res, indent=1))
    sys.exit(rc)


if __name__ == "__main__":
    main()
