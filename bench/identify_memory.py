"""Step 2 (binding_sae.identify) at LLaVA-1.5-7B shape, random weights: time and peak GPU memory of score / verify / describe.

Run from the repo root on a GPU: `python3 bench/identify_memory.py 64` (64 ChooseAttr questions, stand-in images);
`MODEL=tiny` runs it on the CPU. Writes $OUT/identify_gpu.json."""
import json, os, sys, time
from pathlib import Path
import numpy as np, pandas as pd, torch
from PIL import Image
sys.path.insert(0, os.getcwd())
from binding_sae.fixtures import random_llava
from binding_sae.sae import make_sae
from binding_sae.identify import score_features, verify_features, describe_features, latent_scores, rank_features
DEV = "cuda" if torch.cuda.is_available() else "cpu"
sync = torch.cuda.synchronize if DEV == "cuda" else (lambda: None)
out = Path(os.environ.get("OUT", "/tmp")); res = {}
n = int(sys.argv[1]) if len(sys.argv) > 1 else 64
df = pd.read_csv("nbs/test_data/gqa/ChooseAttr_questions.csv", dtype=str, keep_default_na=False).head(n).reset_index(drop=True)
img = Path("/tmp/imgs"); img.mkdir(exist_ok=True)
for i, r in df.iterrows():
    Image.fromarray(np.random.RandomState(i).randint(0, 255, (336, 448, 3), dtype=np.uint8)).save(img / f"{r.img_id}.jpg")
df["image_path"] = [str(img / f"{i}.jpg") for i in df.img_id]
t = time.time(); vlm = random_llava(os.environ.get("MODEL", "llava-1.5-7b"), device=DEV); res["load_s"] = time.time() - t
LAYER = min(12, vlm.n_layers - 1)
sae = make_sae("topk", d_in=vlm.d_model, d_sae=32768 if DEV == "cuda" else 256, k=32, device=DEV).eval()
def timed(name, f):
    sync(); DEV == "cuda" and torch.cuda.reset_peak_memory_stats(); t = time.time()
    r = f(); sync()
    res[name] = {"s": round(time.time() - t, 2), "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if DEV == "cuda" else None}
    print(name, res[name], flush=True); return r
for kind in ("attribute", "question"):
    for bs in (8, 32):
        try: r = timed(f"score_{kind}_bs{bs}", lambda: score_features(vlm, sae, df, LAYER, kind, batch_size=bs, grad_batch_size=bs))
        except torch.OutOfMemoryError as e: res[f"score_{kind}_bs{bs}"] = "OOM"; print("OOM", kind, bs); torch.cuda.empty_cache()
        else: res[f"splice_error_{kind}_bs{bs}"] = r["splice_error"]
r = score_features(vlm, sae, df, LAYER, "attribute", batch_size=32)
s = latent_scores(r, "binding", 0.1, 10)
cand = rank_features(s["score"], s["firing_rate"] >= 0.01)[:20]
e = timed("verify20_attribute_bs32", lambda: verify_features(vlm, sae, df, LAYER, cand, "attribute", 32))
res["attr_vs_patch_corr"] = float(np.corrcoef(s["binding_score"][cand], -e.mean(0))[0, 1])
timed("verify5_all_bs8", lambda: verify_features(vlm, sae, df.head(16), LAYER, cand[:5], "all", 8))
timed("describe8_attribute_bs32", lambda: describe_features(vlm, sae, df, LAYER, cand[:8], "attribute", 0.1, 32))
res["n"] = n; res["device"] = torch.cuda.get_device_name(0) if DEV == "cuda" else "cpu"
(out / "identify_gpu.json").write_text(json.dumps(res, indent=2)); print(json.dumps(res))
