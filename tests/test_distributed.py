"""Step 1 (harvest + SAE training) under `torchrun --nproc_per_node 2` (gloo, CPU) against one process on the smoke
config: the harvested shards and index are the same bytes, the SAE weights agree within 1e-6, only rank 0 writes the
folder's JSON, a killed rank stops the launch with an error instead of a hang, and a rerun with one process resumes
the SAE training from the checkpoint the two ranks left."""
import json, os, signal, subprocess, sys, time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
CONFIG = "configs/toy_smoke.yaml"
SHORT = ["--set", "training.n_tokens=2560", "--set", "training.checkpoint_every=5"]  # 10 steps
LONG = ["--set", "training.n_tokens=256000", "--set", "training.checkpoint_every=20"]  # 1000 steps: time to kill a rank
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "BINDING_SAE_DIST_TIMEOUT_S": "60", "OMP_NUM_THREADS": "1"}

def launch(exp, *args, ranks:int=1, **kw):
    "The train step of the smoke config into `exp`, in one process or under torchrun with `ranks` ranks."
    head = [sys.executable, "-m", "binding_sae.cli"] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "-m", "binding_sae.cli"]
    cmd = [*head, "run", "--config", CONFIG, "--steps", "train", "--engine", "direct", "--experiment_dir", str(exp), *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)

def finish(p, timeout=600) -> str:
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, out[-3000:]
    return out

def files(folder) -> dict:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(Path(folder).rglob("*")) if f.is_file()}

def test_two_ranks_match_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    finish(launch(one, *SHORT))
    finish(launch(two, *SHORT, ranks=2))
    a, b = files(one / "activations"), files(two / "activations")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a), sorted(k for k in a if a.get(k) != b.get(k))
    assert not (two / "activations/train/ranks").exists()
    wa, wb = load_file(one / "sae/sae_weights.safetensors"), load_file(two / "sae/sae_weights.safetensors")
    for k in wa: torch.testing.assert_close(wb[k], wa[k], rtol=1e-6, atol=1e-6, msg=lambda m: f"{k}: {m}")
    done = json.loads((two / "train.done.json").read_text())
    assert done["distributed"]["world_size"] == 2 and set(done["distributed"]["ranks"]) == {"0", "1"}
    assert "distributed" not in json.loads((one / "train.done.json").read_text())
    m = json.loads((two / "manifest.json").read_text())
    assert m["steps"]["train"]["distributed"]["world_size"] == 2

    # a rank killed mid-training stops the launch; one process then resumes from the ranks' checkpoint
    p = launch(two, *LONG, "--force", ranks=2)
    ckpt, t0 = two / "sae_checkpoint.pt", time.time()
    old = ckpt.stat().st_mtime_ns if ckpt.exists() else None
    while not (ckpt.exists() and ckpt.stat().st_mtime_ns != old) and p.poll() is None and time.time() - t0 < 300: time.sleep(0.05)
    victim = next(c for c in worker_pids(p.pid) if "RANK=1" in Path(f"/proc/{c}/environ").read_bytes().decode(errors="replace").split("\0"))
    os.kill(victim, signal.SIGKILL)
    out, _ = p.communicate(timeout=180)
    assert p.returncode != 0 and "binding_sae.cli" in out and ("Signal 9" in out or "SIGKILL" in out), out[-3000:]
    out = finish(launch(two, *LONG))
    assert "resuming SAE training" in out, out[-3000:]
    hist = json.loads((two / "sae/history.json").read_text())
    assert hist[-1]["step"] == 1000 and [h["step"] for h in hist] == sorted({h["step"] for h in hist})

def worker_pids(pid:int) -> list:
    "The child processes of `pid` (torchrun's workers)."
    kids = []
    for t in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(c) for c in (t / "children").read_text().split()]
    return kids
