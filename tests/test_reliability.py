"""Reliability (issue 8): bad inputs fail with one clear line and exit 2, killed runs resume to the same bytes,
reruns are deterministic, and every output file is written to a temporary name and renamed into place.

Everything runs on a tiny world (80 scenes) and a tiny SAE so the file stays within a few minutes on 2 CPU cores.
CLI cases run `python -m binding_sae.cli` in a subprocess where the failure comes before torch is imported (cheap);
cases that need torch/transformers call `binding_sae.cli.main(argv)` in-process (the same code path minus the
process start: return code and the `binding-sae: error: ...` line on stderr are asserted just the same).
"""
from __future__ import annotations

import ast, errno, hashlib, json, os, shutil, signal, subprocess, sys, time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "binding_sae"
SMOKE = ROOT / "configs" / "toy_smoke.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg"}
CLI = [sys.executable, "-m", "binding_sae.cli"]
N_SCENES = 80
LAYER = 2


# ----------------------------------------------------------------------------------------------------------------
# helpers

def run_cli(*args, timeout=300) -> subprocess.CompletedProcess:
    "Run the CLI in a subprocess (cwd = repo root)."
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=timeout)

def error_line(stderr:str) -> str:
    "The single `binding-sae: error: ...` line of a failed command (a progress bar left open may precede it)."
    tag = "binding-sae: error: "
    lines = [l[l.index(tag):] for l in stderr.splitlines() if tag in l]
    assert len(lines) == 1, f"expected one error line on stderr, got:\n{stderr[-3000:]}"
    return lines[0]

def assert_user_error(rc:int, stderr:str, *phrases):
    "Exit code 2, no traceback, one error line that contains every phrase (case-insensitive)."
    assert "Traceback" not in stderr, stderr[-3000:]
    assert rc == 2, f"exit code {rc}, stderr:\n{stderr[-3000:]}"
    line = error_line(stderr)
    for p in phrases: assert p.lower() in line.lower(), f"{p!r} not in {line!r}"
    return line

def cli_fails(*args, phrases=()):
    r = run_cli(*args)
    return assert_user_error(r.returncode, r.stderr, *phrases)

def main_fails(capsys, *args, phrases=()):
    "Run `binding_sae.cli.main` in-process; assert it returns 2 with the phrases in its error line."
    from binding_sae.cli import main
    capsys.readouterr()
    rc = main([str(a) for a in args])
    return assert_user_error(rc, capsys.readouterr().err, *phrases)

def snapshot(folder) -> dict:
    "{relative path: sha256} of every file under `folder` ({} when it does not exist)."
    folder = Path(folder)
    if not folder.exists(): return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}

def tmp_files(folder) -> list:
    return sorted(str(p) for p in Path(folder).rglob("*.tmp")) if Path(folder).exists() else []

def assert_complete_files(folder, allow_tmp=False):
    "No `*.tmp` (unless allowed), every JSON parses, every safetensors/CSV/.pt file reads in full."
    folder = Path(folder)
    if not folder.exists(): return
    if not allow_tmp: assert not tmp_files(folder), tmp_files(folder)
    for p in folder.rglob("*"):
        if not p.is_file() or p.suffix == ".tmp": continue
        if p.suffix == ".json": json.loads(p.read_text())
        elif p.suffix == ".safetensors":
            from safetensors.torch import load_file
            load_file(p)
        elif p.suffix == ".csv":
            import pandas as pd
            pd.read_csv(p)
        elif p.suffix == ".pt":
            import torch
            torch.load(p, map_location="cpu", weights_only=False)
        elif p.suffix == ".yaml": yaml.safe_load(p.read_text())

def write_yaml(path, data) -> Path:
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))
    return Path(path)


# ----------------------------------------------------------------------------------------------------------------
# session fixtures: the model, a tiny world, a tiny config, two uninterrupted pipeline runs

@pytest.fixture(scope="session")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reliability")

@pytest.fixture(scope="session")
def toy_model(base) -> Path:
    "A private copy of the shipped toy model (an untrained stand-in of the same shape if it is not there yet)."
    out = base / "toy_llava"
    shipped = ROOT / "models" / "toy_llava"
    if (shipped / "config.json").exists() and (shipped / "model.safetensors").exists():
        shutil.copytree(shipped, out)
    else:
        from binding_sae.toy import build_toy_llava, save_toy
        save_toy(*build_toy_llava(), out)
    return out

@pytest.fixture(scope="session")
def model_shape(toy_model) -> tuple:
    "(n_layers, d_model) of the toy model."
    t = json.loads((toy_model / "config.json").read_text())["text_config"]
    return t["num_hidden_layers"], t["hidden_size"]

@pytest.fixture(scope="session")
def world(base) -> Path:
    "A tiny synthetic world: <world>/questions.csv + images/."
    from binding_sae.world import make_world
    return make_world(base / "world", N_SCENES, 1).parent

def smoke_sets(toy_model, world) -> list:
    "`--set` overrides that shrink configs/toy_smoke.yaml to a few seconds per step."
    sets = {"model.name": str(toy_model), "model.device": "cpu",
            "dataset.refined_dataset": str(world / "questions.csv"), "dataset.image_folder": str(world / "images"),
            "dataset.world": f"{{n_scenes: {N_SCENES}, seed: 1}}",
            "sae.n_features": 64, "sae.k": 4, "sae.dead_tokens": 2000,
            "training.batch_size": 32, "training.n_tokens": 4800, "training.warmup_steps": 5,
            "training.checkpoint_every": 10,
            "harvest.batch_size": 4, "harvest.shard_size": 64,
            "feature_identification.top_k": 4, "feature_identification.n_verify": 4,
            "feature_identification.min_group_size": 2, "feature_identification.min_firing_rate": 0.0,
            "ablation.n_random_features": 5, "ablation.n_bootstrap": 50,
            "knockout.max_samples": 8, "knockout.layers": "[1, 2]", "interchange.min_pairs": 2}
    return [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]

@pytest.fixture(scope="session")
def sets(toy_model, world) -> list:
    return smoke_sets(toy_model, world)

@pytest.fixture(scope="session")
def tiny_cfg(base, toy_model, world) -> dict:
    "configs/toy_smoke.yaml with the same shrinking as `smoke_sets`, as a plain dict (written per test)."
    from binding_sae.config import load_config
    args = smoke_sets(toy_model, world)
    over = {k: yaml.safe_load(v) for k, v in (a.split("=", 1) for a in args[1::2])}
    return load_config(SMOKE, over).to_dict()

@pytest.fixture()
def cfg_file(tmp_path, tiny_cfg) -> Path:
    return write_yaml(tmp_path / "tiny.yaml", tiny_cfg)

@pytest.fixture(scope="session")
def pipeline_runs(base, sets) -> dict:
    "Two uninterrupted runs of the toy pipeline at smoke size with the same seed (run side by side)."
    runs = {}
    for name in ("a", "b"):
        exp = base / f"pipeline_{name}"
        log = open(base / f"pipeline_{name}.log", "w")
        p = subprocess.Popen([*CLI, "run", "--config", SMOKE, "--engine", "direct", "--experiment_dir", exp, *sets],
                             cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT)
        runs[name] = (exp, p, log)
    out = {}
    for name, (exp, p, log) in runs.items():
        rc = p.wait(timeout=900); log.close()
        out[name] = dict(exp=exp, rc=rc, log=(base / f"pipeline_{name}.log").read_text())
    return out

@pytest.fixture(scope="session")
def reference(pipeline_runs) -> Path:
    "The experiment folder of one uninterrupted run whose step 1 (at least) finished."
    a = pipeline_runs["a"]
    assert (a["exp"] / "train.done.json").exists(), a["log"][-5000:]
    return a["exp"]

def copy_experiment(src:Path, dst:Path, keep_steps=("train",)) -> Path:
    "A copy of an experiment folder in which only `keep_steps` count as finished."
    shutil.copytree(src, dst)
    for done in dst.glob("*.done.json"):
        if done.name[:-len(".done.json")] not in keep_steps: done.unlink()
    return dst


# ----------------------------------------------------------------------------------------------------------------
# 1a. config errors through the CLI: exit 2, one line, and no experiment folder is created

CONFIG_CASES = {
    # id: (mutation of the config dict | None, extra CLI args, phrases)
    "unknown_section": (lambda c: c.update(saes={"k": 4}), [], ["Unknown key saes", "did you mean sae?"]),
    "mistyped_key": (lambda c: c["sae"].update(n_feature=64), [], ["Unknown key sae.n_feature", "did you mean sae.n_features?"]),
    "unknown_key_listed": (lambda c: c["training"].update(zzz=1), [], ["Unknown key training.zzz", "valid keys"]),
    "mistyped_set": (None, ["--set", "training.learnig_rate=0.1"], ["training.learnig_rate", "did you mean training.learning_rate?"]),
    "unknown_set_section": (None, ["--set", "modle.target_layer=1"], ["Unknown key modle", "did you mean model?"]),
    "str_for_int": (None, ["--set", "sae.n_features=many"], ["sae.n_features", "must be int", "'many'"]),
    "float_for_int": (None, ["--set", "training.seed=1.5"], ["training.seed", "must be int"]),
    "bool_for_int": (None, ["--set", "sae.k=true"], ["sae.k", "must be int"]),
    "str_for_bool": (lambda c: c["feature_identification"].update(logprob_normalize="maybe"), [],
                     ["feature_identification.logprob_normalize", "must be bool"]),
    "scalar_for_list": (None, ["--set", "dataset.task_types=5"], ["dataset.task_types", "must be list"]),
    "scalar_for_section": (lambda c: c.update(model=5), [], ["model in", "must be"]),
    "bad_choice": (None, ["--set", "sae.architecture=topkk"], ["sae.architecture", "choose one of", "did you mean topk?"]),
    "bad_metric": (None, ["--set", "evaluation.primary_metric=accuracy"], ["evaluation.primary_metric", "logit_diff"]),
    "split_fractions": (None, ["--set", "dataset.split_fractions={sae_train: 0.5, select: 0.2, test: 0.2}"],
                        ["dataset.split_fractions", "add up to 1"]),
    "template_without_question": (None, ["--set", "model.prompt_template=USER <image> ASSISTANT"],
                                  ["model.prompt_template", "{question}"]),
    "negative_layer": (None, ["--set", "model.target_layer=-1"], ["model.target_layer", "≥ 0"]),
    "significance_level": (None, ["--set", "evaluation.significance_level=1.5"], ["evaluation.significance_level", "must be in (0, 1), not 1.5"]),
    "set_without_equals": (None, ["--set", "sae.k"], ["--set", "section.key=value"]),
    # numbers out of range (each was accepted and failed late, or silently ran)
    "n_features_negative": (None, ["--set", "sae.n_features=-5"], ["sae.n_features", "must be ≥ 1, not -5"]),
    "k_zero": (None, ["--set", "sae.k=0"], ["sae.k", "must be in [1, sae.n_features = 64], not 0"]),
    "k_above_n_features": (None, ["--set", "sae.k=65"], ["sae.k", "[1, sae.n_features = 64]", "not 65"]),
    "learning_rate_negative": (None, ["--set", "training.learning_rate=-1"], ["training.learning_rate", "must be > 0, not -1.0"]),
    "batch_size_zero": (None, ["--set", "training.batch_size=0"], ["training.batch_size", "must be ≥ 1, not 0"]),
    "decay_fraction": (None, ["--set", "training.decay_fraction=1.5"], ["training.decay_fraction", "[0, 1]"]),
    "min_firing_rate": (None, ["--set", "feature_identification.min_firing_rate=2"], ["min_firing_rate", "[0, 1]"]),
    "harvest_layer_negative": (None, ["--set", "harvest.layers=[2, -1]"], ["harvest.layers[1]", "≥ 0"]),
    "n_random_features_zero": (None, ["--set", "ablation.n_random_features=0"], ["ablation.n_random_features", "≥ 1"]),
    "knockout_window_zero": (None, ["--set", "knockout.window=0"], ["knockout.window", "≥ 1"]),
    "readout_share_zero": (None, ["--set", "evaluation.readout_max_share=0"], ["evaluation.readout_max_share", "(0, 1]"]),
    "world_scenes_zero": (None, ["--set", "dataset.world={n_scenes: 0}"], ["dataset.world.n_scenes", "≥ 1"]),
    "control_task_typo": (None, ["--set", "ablation.control_tasks=[control, relaton]"],
                          ["ablation.control_tasks[1]", "did you mean relation?"]),
}

@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_config_error(case, tmp_path, tiny_cfg):
    mutate, extra, phrases = CONFIG_CASES[case]
    cfg = json.loads(json.dumps(tiny_cfg))
    if mutate: mutate(cfg)
    path = write_yaml(tmp_path / "bad.yaml", cfg)
    exp = tmp_path / "exp"
    cli_fails("train", "--config", path, "--experiment_dir", exp, *extra, phrases=phrases)
    assert not exp.exists(), "a config error must not create the experiment folder"

def test_set_value_that_is_not_yaml(tmp_path, cfg_file):
    "A --set value that is not valid YAML (a prompt with ': ') is taken as a string, so the config check names it."
    cli_fails("train", "--config", cfg_file, "--experiment_dir", tmp_path / "exp",
              "--set", "model.prompt_template=USER: <image> ASSISTANT:", phrases=["model.prompt_template", "{question}"])
    assert not (tmp_path / "exp").exists()

def test_config_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"; path.write_text("- model\n- sae\n")
    cli_fails("train", "--config", path, "--experiment_dir", tmp_path / "exp", phrases=["must hold a mapping of sections"])
    assert not (tmp_path / "exp").exists()

def test_config_invalid_yaml(tmp_path):
    path = tmp_path / "broken.yaml"; path.write_text("model:\n  name: [unclosed\n")
    cli_fails("train", "--config", path, "--experiment_dir", tmp_path / "exp", phrases=["not valid YAML", "fix the syntax"])
    assert not (tmp_path / "exp").exists()

YAML_CASES = {
    # id: (file bytes, phrases)
    "unclosed_bracket": (b"sae:\n  k: 4\nmodel:\n  name: [unclosed\n", ["not valid YAML at line 5, column 1", "fix the syntax"]),
    "tab_indent": (b"sae:\n\tk: 4\n", ["not valid YAML at line 2, column 1"]),
    "bad_indent": (b"sae:\n  k: 4\n   n_features: 8\n", ["not valid YAML at line 3, column 14", "mapping values are not allowed"]),
    "key_twice": (b"sae:\n  k: 4\ntraining:\n  seed: 1\nsae:\n  k: 8\n", ["'sae' is given twice (first on line 1)", "line 5"]),
    "latin1": ("model:\n  name: mod\u00e8le\n".encode("latin-1"), ["is not UTF-8 text (byte 0xe8 on line 2)", "save it as UTF-8"]),
}

@pytest.mark.parametrize("case", list(YAML_CASES))
def test_config_yaml_errors_name_line_and_column(case, tmp_path):
    "A YAML mistake names file, line and column; a key given twice (YAML keeps the last silently) and a non-UTF-8 file too."
    data, phrases = YAML_CASES[case]
    path = tmp_path / "c.yaml"; path.write_bytes(data)
    line = cli_fails("check-config", path, phrases=phrases)
    assert str(path) in line
    cli_fails("train", "--config", path, "--experiment_dir", tmp_path / "exp", phrases=phrases)
    assert not (tmp_path / "exp").exists()

def test_check_config_rejects_out_of_range(tmp_path, tiny_cfg):
    "`check-config` said 'ok' to these; now each is one line naming the setting, its range and the value."
    for key, value, phrase in [("sae.n_features", -5, "sae.n_features"), ("sae.k", 0, "sae.k"),
                               ("training.learning_rate", -1, "training.learning_rate"), ("training.batch_size", 0, "training.batch_size")]:
        cfg = json.loads(json.dumps(tiny_cfg))
        sec, name = key.split(".")
        cfg[sec][name] = value
        cli_fails("check-config", write_yaml(tmp_path / "bad.yaml", cfg), phrases=[phrase, "must be", f"not {float(value) if name == 'learning_rate' else value}"])

def test_config_path_is_a_folder(tmp_path):
    cli_fails("check-config", tmp_path, phrases=["is a folder", "--config"])

def test_config_missing_file(tmp_path):
    cli_fails("run", "--config", tmp_path / "nope.yaml", "--experiment_dir", tmp_path / "exp",
              phrases=["nope.yaml does not exist", "--config"])
    assert not (tmp_path / "exp").exists()

def test_check_config_reports_errors_too(tmp_path, tiny_cfg):
    cfg = json.loads(json.dumps(tiny_cfg)); cfg["sae"]["n_feature"] = 1
    cli_fails("check-config", write_yaml(tmp_path / "bad.yaml", cfg), phrases=["did you mean sae.n_features?"])

RUN_ARG_CASES = {
    "steps_out_of_range": (["--steps", "7"], ["step numbers run from 1 to 5"]),
    "unknown_step": (["--steps", "2,frobnicate"], ["Unknown step 'frobnicate'"]),
    "experiment_name_path": (["--experiment_name", "a/b"], ["plain name", "--experiment_dir"]),
    "skip_train_without_sae": (["--skip_train"], ["--skip_train needs --sae_checkpoint"]),
    "sae_checkpoint_missing": (["--skip_train", "--sae_checkpoint", "/nonexistent/sae_checkpoint.pt"], ["does not exist"]),
}

@pytest.mark.parametrize("case", list(RUN_ARG_CASES))
def test_run_argument_error(case, tmp_path, cfg_file):
    extra, phrases = RUN_ARG_CASES[case]
    args = ["run", "--config", cfg_file, "--engine", "direct", *extra]
    if "--experiment_name" not in extra: args += ["--experiment_dir", tmp_path / "exp"]
    cli_fails(*args, phrases=phrases)
    assert not (tmp_path / "exp").exists() and not (tmp_path / "a").exists()

def test_experiment_dir_is_a_file(tmp_path, cfg_file):
    "--experiment_dir naming a file ended in a FileExistsError traceback; now one line, and the file is untouched."
    f = tmp_path / "results.txt"; f.write_text("notes\n")
    for cmd in (["train"], ["run", "--engine", "direct"], ["run", "--dry_run"]):
        cli_fails(*cmd, "--config", cfg_file, "--experiment_dir", f, phrases=[str(f), "is a file, not a folder", "--experiment_dir"])
        cli_fails(*cmd, "--config", cfg_file, "--experiment_dir", f / "exp", phrases=[f"({f} is a file)"])
    assert f.read_text() == "notes\n"

def _unwritable_dir(tmp_path) -> Path:
    "A folder this process cannot create files in (root ignores permissions, so /sys, where even root cannot)."
    if os.geteuid() != 0:
        ro = tmp_path / "readonly"; ro.mkdir(); ro.chmod(0o555)
        return ro / "exp"
    if not Path("/sys").is_dir(): pytest.skip("running as root without /sys: no folder root cannot write")
    return Path("/sys") / f"binding_sae_test_{os.getpid()}"

def test_experiment_dir_not_writable(tmp_path, cfg_file):
    exp = _unwritable_dir(tmp_path)
    line = cli_fails("train", "--config", cfg_file, "--experiment_dir", exp, phrases=["Cannot write into", "--experiment_dir"])
    assert str(exp) in line or str(exp.parent) in line
    assert not exp.exists()

def test_make_world_zero_scenes(tmp_path):
    cli_fails("make-world", "--out", tmp_path / "w", "--n", "0", phrases=["n_scenes must be at least 1"])
    assert not (tmp_path / "w").exists()


# ----------------------------------------------------------------------------------------------------------------
# 1b. data errors (questions CSV, task selection, images): exit 2 from step 1 before anything but config.yaml is written

def _bad_world(tmp_path, world, edit_csv=None, edit_images=None):
    "A copy of the tiny world with its CSV and/or images damaged."
    import pandas as pd
    dst = tmp_path / "world"
    shutil.copytree(world, dst)
    if edit_csv is not None:
        df = pd.read_csv(dst / "questions.csv", dtype=str, keep_default_na=False)
        out = edit_csv(df, dst / "questions.csv")
        if out is not None: out.to_csv(dst / "questions.csv", index=False)
    if edit_images is not None: edit_images(dst / "images")
    return dst

def _binding_img(folder) -> Path:
    "The image of the first binding_choose question of a world."
    import pandas as pd
    df = pd.read_csv(Path(folder).parent / "questions.csv", dtype=str)
    return Path(folder) / f"{df[df.type_detailed == 'binding_choose'].img_id.iloc[0]}.png"

DATA_CASES = {
    "csv_missing_columns": (dict(edit_csv=lambda df, p: df.drop(columns=["answer", "type_detailed"])),
                            ["lacks required column", "'answer'", "'type_detailed'"]),
    "csv_renamed_column": (dict(edit_csv=lambda df, p: df.rename(columns={"question": "questions"})),
                           ["lacks required column", "'question'", "closest present: 'questions'"]),
    "csv_empty_file": (dict(edit_csv=lambda df, p: (p.write_bytes(b""), None)[1]), ["is empty"]),
    "csv_header_only": (dict(edit_csv=lambda df, p: df.head(0)), ["has a header but no rows"]),
    "csv_duplicate_ids": (dict(edit_csv=lambda df, p: df.assign(question_id=df.question_id.where(df.index != 1, df.question_id[0]))),
                          ["question_id must be unique"]),
    "csv_blank_answer": (dict(edit_csv=lambda df, p: df.assign(answer=df.answer.where(df.index != 3, ""))),
                         ["empty 'answer'"]),
    "image_missing": (dict(edit_images=lambda d: _binding_img(d).unlink()), ["images are missing", ".jpg"]),
    "image_corrupt": (dict(edit_images=lambda d: _binding_img(d).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)),
                      ["cannot be read", "corrupt"]),
    "image_truncated": (dict(edit_images=lambda d: _binding_img(d).write_bytes(_binding_img(d).read_bytes()[:60])),
                        ["cannot be read"]),
    # inputs nobody had tried
    "csv_latin1": (dict(edit_csv=lambda df, p: (p.write_bytes(p.read_text().replace("?", " caf\u00e9?", 1).encode("latin-1")), None)[1]),
                   ["is not UTF-8 (byte 0xe9 on line 2)", "save it as UTF-8"]),
    "csv_utf16": (dict(edit_csv=lambda df, p: (p.write_bytes(p.read_text().encode("utf-16")), None)[1]), ["is UTF-16 text"]),
    "csv_semicolons": (dict(edit_csv=lambda df, p: (df.to_csv(p, index=False, sep=";"), None)[1]), ["looks separated by ';'"]),
    "options_differ_by_case": (dict(edit_csv=lambda df, p: df.assign(**{"false option": df["false option"].where(
        df.index != 0, df["true option"][0].upper())})), ["same true and false option (ignoring case"]),
    "options_swapped": (dict(edit_csv=lambda df, p: df.assign(**{"true option": df["false option"], "false option": df["true option"]})),
                        ["answer is the false option", "look swapped"]),
    "image_1x1": (dict(edit_images=lambda d: _save_image(_binding_img(d), (1, 1))), ["1×1 px", "under 8 px"]),
    "image_strip": (dict(edit_images=lambda d: _save_image(_binding_img(d), (2000, 20))), ["2000×20 px", "more than 20:1"]),
}

def _save_image(path, size):
    from PIL import Image
    Image.new("RGB", size, (200, 30, 30)).save(path)

@pytest.mark.parametrize("case", list(DATA_CASES))
def test_data_error(case, tmp_path, tiny_cfg, world, capsys):
    edits, phrases = DATA_CASES[case]
    w = _bad_world(tmp_path, world, **edits)
    cfg = json.loads(json.dumps(tiny_cfg))
    cfg["dataset"].update(refined_dataset=str(w / "questions.csv"), image_folder=str(w / "images"))
    exp = tmp_path / "exp"
    main_fails(capsys, "train", "--config", write_yaml(tmp_path / "c.yaml", cfg), "--experiment_dir", exp, phrases=phrases)
    assert snapshot(exp) == {}, snapshot(exp)  # the pre-run input check refuses before anything is written

SELECTION_CASES = {
    "csv_does_not_exist": (["--set", "dataset.refined_dataset=/nonexistent/questions.csv"], ["does not exist", "dataset.refined_dataset"]),
    "image_folder_missing": (["--set", "dataset.image_folder=/nonexistent/images"], ["Image folder", "does not exist"]),
    "no_matching_task": (["--set", "dataset.task_types=[binding_chose]"], ["No row of", "matches task_types", "values present"]),
    "empty_task_list": (["--set", "dataset.task_types=[]"], ["task_types is an empty list"]),
}

@pytest.mark.parametrize("case", list(SELECTION_CASES))
def test_dataset_selection_error(case, tmp_path, cfg_file, capsys):
    extra, phrases = SELECTION_CASES[case]
    exp = tmp_path / "exp"
    # dataset.world: null, else a missing CSV is (by design) generated as a synthetic world
    main_fails(capsys, "train", "--config", cfg_file, "--experiment_dir", exp, "--set", "dataset.world=null", *extra,
               phrases=phrases)
    assert_complete_files(exp)
    assert set(snapshot(exp)) <= {"config.yaml", "manifest.json"}

def test_options_not_in_question_api(world):
    "API: Choose questions whose options do not occur in the question are refused with the ids named."
    from binding_sae.data import load_questions, check_options_in_question, DataError
    from binding_sae.config import UserError
    df = load_questions(world / "questions.csv", world / "images", ["binding_choose"])
    check_options_in_question(df)  # the world's own questions are fine
    bad = df.copy()
    bad.loc[0, "false option"] = "purple-ish"
    with pytest.raises(DataError, match="lack their true/false option") as e: check_options_in_question(bad)
    assert issubclass(e.type, UserError) and str(bad.question_id[0]) in str(e.value)
    bad = df.drop(columns=["true option"])
    with pytest.raises(DataError, match="need column"): check_options_in_question(bad)

def test_options_not_in_question_load(tmp_path, world):
    "API: `load_questions(check_options=True)` refuses a CSV whose Choose options were edited away."
    from binding_sae.data import load_questions, DataError
    w = _bad_world(tmp_path, world, edit_csv=lambda df, p: df.assign(
        **{"true option": df["true option"].where(df.type_detailed != "binding_choose", "ultraviolet")}))
    with pytest.raises(DataError, match="lack their true/false option"):
        load_questions(w / "questions.csv", w / "images", ["binding_choose"], check_options=True)


# ----------------------------------------------------------------------------------------------------------------
# 1c. model errors: layer, width, device, attention

def test_layer_out_of_range(tmp_path, cfg_file, model_shape, capsys):
    exp = tmp_path / "exp"
    main_fails(capsys, "train", "--config", cfg_file, "--experiment_dir", exp, "--set", "model.target_layer=99",
               phrases=["model.target_layer 99 is out of range", f"0–{model_shape[0] - 1}"])
    assert_complete_files(exp)
    assert not (exp / "activations").exists() and not (exp / "sae").exists()

def test_harvest_layer_out_of_range(tmp_path, cfg_file, capsys):
    main_fails(capsys, "train", "--config", cfg_file, "--experiment_dir", tmp_path / "exp", "--set", "harvest.layers=[1, 40]",
               phrases=["40 is out of range"])
    assert not (tmp_path / "exp" / "activations").exists()

def test_d_model_mismatch(tmp_path, cfg_file, model_shape, capsys):
    exp = tmp_path / "exp"
    main_fails(capsys, "train", "--config", cfg_file, "--experiment_dir", exp, "--set", "model.d_model=4096",
               phrases=["model.d_model is 4096", f"residual width {model_shape[1]}"])
    assert_complete_files(exp)
    assert not (exp / "activations").exists()

def test_model_not_found(tmp_path, cfg_file, capsys):
    main_fails(capsys, "train", "--config", cfg_file, "--experiment_dir", tmp_path / "exp",
               "--set", f"model.name={tmp_path / 'no_such_model'}", phrases=["no_such_model", "model.name"])

def test_cuda_on_cpu_only_machine(tmp_path, cfg_file, capsys):
    import torch
    if torch.cuda.is_available(): pytest.skip("this machine has a GPU")
    exp = tmp_path / "exp"
    main_fails(capsys, "train", "--config", cfg_file, "--experiment_dir", exp, "--set", "model.device=cuda",
               phrases=["cuda", "no CUDA GPU", "model.device"])
    assert not (exp / "activations").exists()

def test_cuda_on_cpu_only_machine_api():
    import torch
    if torch.cuda.is_available(): pytest.skip("this machine has a GPU")
    from binding_sae.config import resolve_device, UserError
    from binding_sae.vlm import load_vlm
    with pytest.raises(UserError, match="no CUDA GPU"): resolve_device("cuda:0")
    with pytest.raises(UserError, match="no CUDA GPU"): load_vlm("models/toy_llava", device="cuda")

def test_flash_attention_with_knockout_api(toy_model, monkeypatch):
    "API: `forward.knockout` refuses a model whose attention kernel ignores custom masks."
    import binding_sae.vlm as V
    from binding_sae.forward import knockout
    vlm = V.load_vlm(str(toy_model), device="cpu", attn_implementation="eager")
    monkeypatch.setattr(V, "_attn_impl", lambda model: "flash_attention_2")
    with pytest.raises(V.ModelError, match="flash_attention_2") as e:
        with knockout(vlm, {}): pass
    assert "sdpa" in str(e.value)

def test_flash_attention_with_knockout_cli(tmp_path, cfg_file, capsys):
    "CLI: `binding-sae knockout` with flash attention stops with a message naming the setting."
    exp = tmp_path / "exp"
    main_fails(capsys, "knockout", "--config", cfg_file, "--experiment_dir", exp,
               "--set", "model.attn_implementation=flash_attention_2", phrases=["flash_attention_2", "attn_implementation"])
    assert not (exp / "results").exists()
    assert_complete_files(exp)


@pytest.mark.parametrize("command", ["knockout", "ablate"])
def test_flash_attention_refused_before_model_load(command, tmp_path, reference, capsys, monkeypatch):
    "knockout (also run by ablate) refuses flash_attention_2 from the config, before loading a model (on a GPU too)."
    import binding_sae.vlm as V
    def no_load(*a, **k): raise AssertionError("the model was loaded before the attention setting was checked")
    monkeypatch.setattr(V, "load_vlm", no_load)
    exp = copy_experiment(reference, tmp_path / "exp", keep_steps=("train", "identify"))
    shutil.rmtree(exp / "results", ignore_errors=True)
    cfg = yaml.safe_load((exp / "config.yaml").read_text())
    cfg["model"]["attn_implementation"] = "flash_attention_2"
    (exp / "config.yaml").unlink()  # the same folder, now for the flash config
    from binding_sae.cli import main
    capsys.readouterr()
    try: rc = main([command, "--config", str(write_yaml(tmp_path / "flash.yaml", cfg)), "--experiment_dir", str(exp)])
    except AssertionError as e:
        if "was loaded before" in str(e):
            pytest.xfail(f"{command}: flash_attention_2 is only refused when the knockout hooks are entered, after the model "
                         "(and for ablate, the whole ablation) ran (binding_sae.ablate.knockout_step / ablate_step)")
        raise
    assert_user_error(rc, capsys.readouterr().err, "flash_attention_2", "knockout", "sdpa")
    assert not (exp / "results").exists()

# ----------------------------------------------------------------------------------------------------------------
# 1d. SAE checkpoints and feature catalogs that do not fit

def _sae_folder(path, d_in, layer, d_sae=64):
    from binding_sae.sae import make_sae, save_sae
    return save_sae(make_sae("topk", d_in, d_sae, seed=0, k=4), path, dict(layer=layer, model_name="x"))

def test_sae_checkpoint_other_layer(tmp_path, cfg_file, model_shape, capsys):
    sae = _sae_folder(tmp_path / "sae_l1", model_shape[1], layer=1)
    exp = tmp_path / "exp"
    main_fails(capsys, "run", "--config", cfg_file, "--experiment_dir", exp, "--engine", "direct", "--skip_train",
               "--sae_checkpoint", sae, "--steps", "2", phrases=["trained on layer 1", f"model.target_layer is {LAYER}"])
    assert not (exp / "sae").exists() and not (exp / "train.done.json").exists()
    assert_complete_files(exp)

def test_sae_checkpoint_other_width(tmp_path, cfg_file, model_shape, capsys):
    sae = _sae_folder(tmp_path / "sae_w32", 32, layer=LAYER)
    exp = tmp_path / "exp"
    main_fails(capsys, "run", "--config", cfg_file, "--experiment_dir", exp, "--engine", "direct", "--skip_train",
               "--sae_checkpoint", sae, "--steps", "2", phrases=["width 32", f"width {model_shape[1]}"])
    assert not (exp / "sae").exists() and not (exp / "train.done.json").exists()

def test_sae_training_checkpoint_other_layer(tmp_path, cfg_file, model_shape, capsys):
    "Our own sae_checkpoint.pt format, written for layer 1, given to a layer-2 experiment."
    import torch
    from binding_sae.sae import make_sae, train_sae
    from binding_sae.config import SAEConfig, TrainingConfig
    x = [torch.randn(16, model_shape[1]) for _ in range(2)]
    ck = tmp_path / "sae_checkpoint.pt"
    train_sae(make_sae("topk", model_shape[1], 32, seed=0, k=4), x, SAEConfig(), TrainingConfig(warmup_steps=1, checkpoint_every=1),
              n_steps=2, checkpoint_path=ck, metadata=dict(layer=1), device="cpu", progress=False)
    main_fails(capsys, "run", "--config", cfg_file, "--experiment_dir", tmp_path / "exp", "--engine", "direct",
               "--skip_train", "--sae_checkpoint", ck, "--steps", "2", phrases=["trained on layer 1"])
    assert not (tmp_path / "exp" / "sae").exists()

@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_sae_checkpoint_corrupt(kind, tmp_path, cfg_file, capsys):
    "A corrupt or truncated .pt must give one clear line, not a pickle/zip traceback."
    import torch
    ck = tmp_path / "sae_checkpoint.pt"
    if kind == "garbage": ck.write_bytes(bytes(range(256)) * 8)
    else:
        torch.save({"format": "binding_sae.sae_checkpoint", "x": torch.zeros(4096)}, ck)
        ck.write_bytes(ck.read_bytes()[:2000])
    try:
        line = main_fails(capsys, "run", "--config", cfg_file, "--experiment_dir", tmp_path / "exp", "--engine", "direct",
                          "--skip_train", "--sae_checkpoint", ck, "--steps", "2", phrases=["sae_checkpoint.pt"])
    except Exception as e:
        pytest.xfail(f"corrupt --sae_checkpoint is not turned into a UserError (binding_sae.sae.read_checkpoint): {type(e).__name__}")
    assert not (tmp_path / "exp" / "sae").exists()

def test_catalog_names_latents_beyond_sae_width(tmp_path, reference, capsys):
    "`binding-sae ablate` refuses a feature_catalog.json whose ids do not exist in the SAE (width 64)."
    if not (reference / "identify.done.json").exists(): pytest.fail("the reference run did not finish step 2")
    exp = copy_experiment(reference, tmp_path / "exp", keep_steps=("train", "identify"))
    shutil.rmtree(exp / "results", ignore_errors=True)
    cat = json.loads((exp / "feature_catalog.json").read_text())
    width = cat["metadata"]["sae_width"]
    cat["selected_feature_ids"] = cat["selected_feature_ids"][:1] + [width + 7]
    cat["features"] = cat["features"][:1] + [{**cat["features"][0], "feature_id": width + 7, "rank": 2}]
    (exp / "feature_catalog.json").write_text(json.dumps(cat))
    main_fails(capsys, "ablate", "--config", exp / "config.yaml", "--experiment_dir", exp,
               phrases=[str(width + 7), f"0–{width - 1}", "catalog"])
    assert not (exp / "results" / "ablation_results.json").exists()
    assert not (exp / "ablate.done.json").exists()
    assert_complete_files(exp)


# ----------------------------------------------------------------------------------------------------------------
# 1e. experiment folder of another config; out of disk; NaN / inf

def test_folder_of_another_config_refused(tmp_path, tiny_cfg):
    from binding_sae.config import config_from_dict
    from binding_sae.experiment import prepare_experiment
    exp = tmp_path / "exp"
    cfg = write_yaml(tmp_path / "a.yaml", tiny_cfg)
    prepare_experiment(config_from_dict(tiny_cfg), exp)
    (exp / "feature_catalog.json").write_text('{"selected_feature_ids": [1]}\n')
    before = snapshot(exp)
    cli_fails("identify", "--config", cfg, "--experiment_dir", exp, "--set", "sae.k=8",
              phrases=["written by a different config", "--force"])
    cli_fails("run", "--config", cfg, "--experiment_dir", exp, "--set", "ablation.delta_scale=2.0", "--steps", "3",
              phrases=["different config"])
    assert snapshot(exp) == before, "a refused run must leave the folder untouched"

def test_folder_of_another_config_force(tmp_path, tiny_cfg):
    from binding_sae.config import config_from_dict, config_hash, UserError
    from binding_sae.experiment import prepare_experiment
    exp = tmp_path / "exp"
    a = config_from_dict(tiny_cfg)
    b = config_from_dict(tiny_cfg, overrides={"sae.k": 8})
    prepare_experiment(a, exp)
    (exp / "train.done.json").write_text(json.dumps({"config_hash": config_hash(a)}))
    with pytest.raises(UserError, match="different config"): prepare_experiment(b, exp)
    prepare_experiment(b, exp, force=True)
    assert yaml.safe_load((exp / "config.yaml").read_text())["sae"]["k"] == 8
    from binding_sae.experiment import step_done
    assert not step_done(exp, "train", b)  # the old config's finished step does not count for the new one
    prepare_experiment(b, exp)  # now it is b's folder

def _enospc(*a, **k): raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

def _small_questions(world, n=12):
    from binding_sae.data import load_questions
    return load_questions(world / "questions.csv", world / "images", ["binding_choose"]).head(n)

@pytest.mark.parametrize("where", ["save_file", "os.replace"])
def test_out_of_disk_during_shard_writing(where, tmp_path, toy_model, world, monkeypatch):
    "A full disk while writing a shard gives a UserError naming the disk, and leaves no shard or temp file."
    import binding_sae.train as T
    from binding_sae.config import UserError
    from binding_sae.vlm import load_vlm
    vlm = load_vlm(str(toy_model), device="cpu")
    out = tmp_path / "acts"
    if where == "save_file": monkeypatch.setattr(T, "save_file", _enospc)
    else:
        real = os.replace
        monkeypatch.setattr(os, "replace", lambda a, b: _enospc() if str(b).endswith(".safetensors") else real(a, b))
    try:
        with pytest.raises(UserError) as e:
            T.harvest(vlm, _small_questions(world), [LAYER], "question", out, batch_size=4, shard_size=16, progress=False)
        msg = str(e.value).lower()
        assert "space" in msg and "disk" in msg, msg
    except (AssertionError, OSError) as e:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            pytest.xfail("ENOSPC is not turned into a UserError yet (binding_sae.config.atomic_path)")
        raise
    finally:
        assert not list(out.rglob("*.safetensors")), "no (partial) shard may be left"
        assert not tmp_files(out)
        assert_complete_files(out)

def test_nonfinite_activations_keep_last_good_checkpoint(tmp_path):
    "API: inf in batch 8 of 12 stops training with a clear message; the step-6 checkpoint stays and is finite."
    import torch
    from binding_sae.sae import make_sae, train_sae, NonFiniteError, read_checkpoint
    from binding_sae.config import UserError, SAEConfig, TrainingConfig
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(16, 8, generator=g) for _ in range(12)]
    batches[7] = batches[7].clone(); batches[7][3, 2] = float("inf")
    ck = tmp_path / "sae_checkpoint.pt"
    sae = make_sae("topk", 8, 16, seed=0, k=2)
    with pytest.raises(NonFiniteError, match="NaN or inf") as e:
        train_sae(sae, batches, SAEConfig(), TrainingConfig(warmup_steps=1, checkpoint_every=3), n_steps=12, checkpoint_path=ck,
                  device="cpu", progress=False)
    assert issubclass(e.type, UserError) and "last good checkpoint is kept" in str(e.value)
    saved = read_checkpoint(ck)
    assert saved["step"] == 6
    assert all(torch.isfinite(v).all() for v in saved["sae_state"].values() if v.is_floating_point())
    assert not tmp_files(tmp_path)

def test_nan_activations_cli(tmp_path, reference, capsys):
    "CLI: NaN in a harvested shard stops `binding-sae train` with exit 2; no SAE is written."
    import torch
    from safetensors.torch import load_file, save_file
    exp = copy_experiment(reference, tmp_path / "exp", keep_steps=())
    for p in ("sae", "sae_checkpoint.pt"):
        (shutil.rmtree if (exp / p).is_dir() else Path.unlink)(exp / p)
    shard = sorted((exp / "activations/train" / f"layer{LAYER}").glob("shard_*.safetensors"))[1]
    x = load_file(shard)["activations"]; x[5] = float("nan")
    save_file({"activations": x}, shard)
    main_fails(capsys, "train", "--config", exp / "config.yaml", "--experiment_dir", exp, phrases=["NaN", "activations"])
    assert not (exp / "sae").exists() and not (exp / "train.done.json").exists()
    assert_complete_files(exp)
    if (exp / "sae_checkpoint.pt").exists():
        st = torch.load(exp / "sae_checkpoint.pt", weights_only=False)["sae_state"]
        assert all(torch.isfinite(v).all() for v in st.values() if v.is_floating_point())


# ----------------------------------------------------------------------------------------------------------------
# 1f. every reference YAML passes --dry_run with only warnings

DRY_RUN_CONFIGS = sorted((ROOT / "nbs" / "test_data" / "configs").rglob("*.yaml")) + sorted((ROOT / "configs").glob("*.yaml"))

@pytest.mark.parametrize("path", DRY_RUN_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_dry_run_reference_configs(path, tmp_path):
    exp = tmp_path / "exp"
    r = run_cli("run", "--config", path, "--experiment_dir", exp, "--dry_run")
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert not exp.exists(), "--dry_run must not write anything"
    # warnings and errors, one line each
    assert all(l.startswith("binding-sae: ") for l in r.stderr.splitlines() if l.strip()), r.stderr[-3000:]
    errors = [l for l in r.stderr.splitlines() if l.startswith("binding-sae: error: ")]
    if r.returncode == 2 and not path.name.startswith("toy"):
        # an input this machine lacks (a 7B model, the GQA images): each named in one line with its fix
        named = ("does not exist", "neither a local folder nor in the local HF cache", "has no config.json")
        assert errors and all(any(n in l for n in named) for l in errors), r.stderr[-3000:]
        return
    assert r.returncode == 0 and not errors, r.stderr[-3000:]  # the toy configs' inputs ship with the repository
    assert r.stdout.startswith(f"Dry run: {path} is valid"), r.stdout
    assert r.stdout.rstrip().endswith("Nothing was written."), r.stdout
    steps = r.stdout.split("A run would do ", 1)[1].split(" (engine")[0].split(", ")
    from binding_sae.pipeline import STEPS
    assert steps == [s.name for s in STEPS], steps  # every step, named


# ----------------------------------------------------------------------------------------------------------------
# 2. kill and resume (SIGKILL during harvesting and during SAE training)

TRAIN_OUTPUTS = ("activations", "sae/cfg.json", "sae/sae_weights.safetensors", "sae/metrics.json", "sae/history.json",
                 "splits.csv", "config.yaml")

def _train_files(exp:Path) -> dict:
    snap = snapshot(exp)
    return {k: v for k, v in snap.items() if k.startswith(TRAIN_OUTPUTS) and not k.endswith(".tmp")}

def _kill_when(args, ready, log:Path, timeout=600) -> int:
    "Start the CLI, SIGKILL it as soon as `ready()` holds; return its exit status (-9 when killed)."
    with open(log, "w") as f:
        p = subprocess.Popen([*CLI, *map(str, args)], cwd=ROOT, env=ENV, stdout=f, stderr=subprocess.STDOUT)
    t0 = time.time()
    try:
        while p.poll() is None and time.time() - t0 < timeout:
            if ready():
                os.kill(p.pid, signal.SIGKILL); break
            time.sleep(0.002)
        p.wait(timeout=60)
    finally:
        if p.poll() is None: p.kill()
    return p.returncode

def _kill_and_resume(tmp_path, sets, reference, ready_fn, stage):
    exp = tmp_path / "exp"
    args = ["train", "--config", SMOKE, "--experiment_dir", exp, *sets]
    rc = _kill_when(args, lambda: ready_fn(exp), tmp_path / "killed.log")
    assert rc == -signal.SIGKILL, f"the run ended (rc {rc}) before it could be killed during {stage}"
    assert not (exp / "train.done.json").exists()
    # the killed run's lock file stays behind, naming a process that is gone: the rerun below must take it over
    from binding_sae.experiment import LOCK_NAME, lock_holder
    stale = lock_holder(exp / LOCK_NAME)
    assert stale.get("command", "").startswith("binding-sae train"), stale
    with pytest.raises(ProcessLookupError): os.kill(stale["pid"], 0)
    # a killed run leaves only whole files under their final names; at most the file being written sits in a temp name
    orphans = tmp_files(exp)
    assert all(Path(t).name.startswith(".") for t in orphans), orphans
    assert_complete_files(exp, allow_tmp=True)
    def recorded(d):  # shards that progress.json counts as finished
        prog = json.loads((d / "progress.json").read_text()) if (d / "progress.json").exists() else {"shards": 0}
        return [d / f"layer{LAYER}" / f"shard_{k:05d}.safetensors" for k in range(prog["shards"])]
    kept = {p: p.stat().st_mtime_ns for d in (exp / "activations").glob("*") for p in recorded(d)}
    assert kept, "the killed run should have recorded at least one shard"
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (exp / LOCK_NAME).exists(), "the lock is released when the run ends"
    # resumed, not restarted: the shards written before the kill are kept as they were
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items()), "the rerun rewrote shards of the killed run"
    if stage == "training": assert "resuming SAE training from" in r.stderr, r.stderr[-2000:]
    assert set(tmp_files(exp)) <= set(orphans), "the resumed run left new temp files"
    got, want = _train_files(exp), _train_files(reference)
    assert got.keys() == want.keys()
    diff = [k for k in want if got[k] != want[k]]
    assert not diff, f"resumed run differs from the uninterrupted run in {diff}"
    return exp

def test_kill_during_harvest_resumes(tmp_path, sets, reference):
    def first_shard(exp):  # the first shard is written and recorded in progress.json
        p = exp / "activations/train/progress.json"
        return p.exists() and json.loads(p.read_text()).get("shards", 0) >= 1
    exp = _kill_and_resume(tmp_path, sets, reference, first_shard, "harvest")
    assert json.loads((exp / "activations/train/progress.json").read_text())["complete"]

def test_kill_during_sae_training_resumes(tmp_path, sets, reference):
    def first_checkpoint(exp):
        return (exp / "sae_checkpoint.pt").exists()
    _kill_and_resume(tmp_path, sets, reference, first_checkpoint, "training")

def test_kill_during_ablation_resumes(tmp_path, sets, reference):
    "SIGKILL step 3 once some question chunks are saved; the rerun resumes and writes byte-identical results."
    exp = copy_experiment(reference, tmp_path / "exp", keep_steps=("train", "identify"))
    shutil.rmtree(exp / "results", ignore_errors=True)
    args = ["ablate", "--config", SMOKE, "--experiment_dir", exp, "--engine", "direct", *sets]
    chunks = lambda: list((exp / "results" / ".partial").rglob("*.npz"))
    rc = _kill_when(args, lambda: len(chunks()) >= 3, tmp_path / "killed.log")
    assert rc == -signal.SIGKILL, f"step 3 ended (rc {rc}) before it could be killed"
    kept = {c: c.stat().st_mtime_ns for c in chunks()}
    assert kept and not (exp / "results" / "ablation_results.json").exists()
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli("knockout", *args[1:])  # the knockout sweep is a step of its own
    assert r.returncode == 0, r.stderr[-3000:]
    for f in ("ablation_results.json", "knockout_results.json"):
        assert (exp / "results" / f).read_bytes() == (reference / "results" / f).read_bytes(), f"resumed {f} differs"
    assert not (exp / "results" / ".partial").exists(), "the partial chunks are removed when the step finishes"

def test_rerun_sweeps_orphan_temp_files(tmp_path, tiny_cfg):
    "A temp file left by a kill mid-write (atomic_path's `.name.XXXX.tmp`) is removed when the folder is reused."
    from binding_sae.config import config_from_dict
    from binding_sae.experiment import prepare_experiment
    exp = tmp_path / "exp"
    cfg = config_from_dict(tiny_cfg)
    prepare_experiment(cfg, exp)
    orphan = exp / "activations" / "train" / f"layer{LAYER}" / ".shard_00003.safetensors.k2j4h1.tmp"
    orphan.parent.mkdir(parents=True); orphan.write_bytes(b"\0" * 100)
    prepare_experiment(cfg, exp)
    if orphan.exists():
        pytest.xfail("prepare_experiment does not sweep temp files left by a killed run yet (binding_sae.experiment)")
    assert not tmp_files(exp)


# ----------------------------------------------------------------------------------------------------------------
# 3. determinism: two runs with the same seed give byte-identical JSON outputs

def test_pipeline_runs_finish(pipeline_runs):
    for name, r in pipeline_runs.items():
        assert r["rc"] == 0, f"run {name} failed:\n{r['log'][-5000:]}"
        m = json.loads((r["exp"] / "manifest.json").read_text())
        assert {s["status"] for s in m["steps"].values()} == {"done"}, m["steps"]
        assert_complete_files(r["exp"])

def test_same_seed_same_json(pipeline_runs):
    a, b = pipeline_runs["a"]["exp"], pipeline_runs["b"]["exp"]
    for r in pipeline_runs.values(): assert r["rc"] == 0, r["log"][-5000:]
    def outputs(exp):
        return {str(p.relative_to(exp)): p.read_bytes() for p in sorted(exp.rglob("*.json"))
                if p.name != "manifest.json" and not p.name.endswith(".done.json")}
    ja, jb = outputs(a), outputs(b)
    assert ja.keys() == jb.keys()
    for must in ("sae/metrics.json", "feature_catalog.json", "feature_stats.json", "results/ablation_results.json"):
        assert must in ja, f"{must} missing"
    diff = [k for k in ja if ja[k] != jb[k]]
    assert not diff, f"JSON outputs differ between two runs with the same seed: {diff}"

def test_same_seed_same_tensors(pipeline_runs):
    a, b = pipeline_runs["a"]["exp"], pipeline_runs["b"]["exp"]
    for r in pipeline_runs.values(): assert r["rc"] == 0, r["log"][-5000:]
    sa, sb = snapshot(a), snapshot(b)
    keys = [k for k in sa if k.endswith((".safetensors", ".csv"))]
    assert keys and all(sa[k] == sb.get(k) for k in keys), [k for k in keys if sa[k] != sb.get(k)]

def test_same_seed_same_checkpoint_bytes(pipeline_runs):
    "sae_checkpoint.pt holds the same state in both runs, and ideally the same bytes."
    import torch
    a, b = (pipeline_runs[k]["exp"] / "sae_checkpoint.pt" for k in "ab")
    if a.read_bytes() == b.read_bytes(): return
    ca, cb = (torch.load(p, map_location="cpu", weights_only=False) for p in (a, b))
    def same(x, y):
        if isinstance(x, dict): return x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
        if isinstance(x, (list, tuple)): return len(x) == len(y) and all(same(u, v) for u, v in zip(x, y))
        if torch.is_tensor(x): return torch.equal(x, y)
        return x == y
    assert same(ca, cb), "the two runs' checkpoints hold different state"
    pytest.xfail("same state, different bytes: torch.save(ck, tmp) names the zip archive after the random temp file "
                 "(binding_sae.sae.train_sae.save_checkpoint; save to an open file object instead)")

def test_no_timings_outside_manifest(pipeline_runs):
    "Wall times live only in manifest.json and *.done.json."
    exp = pipeline_runs["a"]["exp"]
    for p in exp.rglob("*.json"):
        if p.name == "manifest.json" or p.name.endswith(".done.json"): continue
        text = p.read_text()
        for key in ('"wall_s"', '"elapsed', '"timestamp"', '"time_s"', '"seconds"'):
            assert key not in text, f"{key} in {p.relative_to(exp)}"


# ----------------------------------------------------------------------------------------------------------------
# 4. atomic outputs: a static check of the package source

ATOMIC_OK_CONTEXTS = {"atomic_path", "TemporaryDirectory", "BytesIO", "StringIO"}
WRITE_METHODS = {"write_text", "write_bytes", "savefig", "save_file", "save_pretrained", "to_csv", "to_json",
                 "to_parquet", "save", "dump", "savez", "savez_compressed", "to_html", "write_html", "write_image"}

def _name(node) -> str:
    if isinstance(node, ast.Name): return node.id
    if isinstance(node, ast.Attribute): return node.attr
    if isinstance(node, ast.Call): return _name(node.func)
    return ""

def _names_in(node) -> set:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}

def _is_write(call:ast.Call) -> bool:
    "A call that writes a file (given a path-like target)."
    fn = _name(call.func)
    if fn == "open":
        mode = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "mode"), None)
        return isinstance(mode, ast.Constant) and any(c in str(mode.value) for c in "wax+")
    if fn not in WRITE_METHODS: return False
    if fn in ("to_csv", "to_json", "to_html"):  # DataFrame methods; without a target they return a string
        return isinstance(call.func, ast.Attribute) and bool(call.args) or any(k.arg in ("path_or_buf", "buf") for k in call.keywords)
    if fn == "dump":  # json.dump / yaml.dump / pickle.dump with a stream
        return len(call.args) > 1 or any(k.arg in ("fp", "stream", "file") for k in call.keywords)
    if fn == "save":  # torch.save(obj, f) / PIL img.save(fp) / np.save(f, a): anything with a target
        return bool(call.args) or any(k.arg in ("fp", "f", "file") for k in call.keywords)
    return True

def package_classes(sources) -> set:
    "Names of the classes the package defines (their own methods are checked where they are defined)."
    return {n.name for src in sources for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ClassDef)}

def non_atomic_writes(source:str, filename:str="<src>", own_classes=frozenset()) -> list:
    "Write calls whose target is not a name bound by `with atomic_path(...)` / a TemporaryDirectory / an in-memory buffer."
    tree = ast.parse(source)
    safe_names = set()
    for node in ast.walk(tree):  # names bound to an in-memory buffer anywhere in the module
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and _name(node.value) in ("BytesIO", "StringIO"):
            for t in node.targets: safe_names |= _names_in(t)
    own = set()  # names bound to an object of a package class (`x = ChunkStore(...)`, `x: ChunkStore`): its methods are checked
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and _name(node.value) in own_classes:
            for t in node.targets: own |= _names_in(t)
        if isinstance(node, ast.arg) and node.annotation is not None and _names_in(node.annotation) & set(own_classes):
            own.add(node.arg)
    bad = []
    def visit(node, safe, func):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)): func = node.name
        if isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if isinstance(item.context_expr, ast.Call) and _name(item.context_expr) in ATOMIC_OK_CONTEXTS and item.optional_vars is not None:
                    safe = safe | _names_in(item.optional_vars)
                elif (isinstance(item.context_expr, ast.Call) and _name(item.context_expr) == "open" and item.optional_vars is not None
                      and item.context_expr.args and _names_in(item.context_expr.args[0]) & safe):
                    safe = safe | _names_in(item.optional_vars)  # a file object opened on the atomic temp name
        own_method = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _names_in(node.func.value) & own \
            and isinstance(node.func.value, ast.Name)
        if isinstance(node, ast.Call) and _is_write(node) and not own_method:
            targets = list(node.args) + [k.value for k in node.keywords]
            if isinstance(node.func, ast.Attribute): targets.append(node.func.value)
            if not any(_names_in(t) & (safe | safe_names) for t in targets):
                bad.append(f"{filename}:{node.lineno}: in {func}: {ast.unparse(node)[:100]}")
        for child in ast.iter_child_nodes(node): visit(child, safe, func)
    visit(tree, frozenset(), "<module>")
    return bad

def package_non_atomic_writes() -> list:
    bad, files = [], [py for py in sorted(PKG.glob("*.py")) if py.name != "_modidx.py"]
    own = package_classes(py.read_text() for py in files)
    for py in files: bad += non_atomic_writes(py.read_text(), str(py.relative_to(ROOT)), own)
    return bad

# known findings reported to the lead (owner's module; not edited here): "file: in function"
KNOWN_NON_ATOMIC = set()  # places known to write non-atomically (none left)

def _known(finding:str) -> bool:
    import re
    m = re.match(r"(.*?):\d+: in (\w+|<module>):", finding)
    return m is not None and f"{m.group(1)}: in {m.group(2)}" in KNOWN_NON_ATOMIC

def test_static_checker_catches_plain_writes():
    src = ("import torch, json\n"
           "def f(p, x):\n"
           "    open(p, 'w').write('x')\n"
           "    torch.save(x, p)\n"
           "    p.write_text('x')\n"
           "    img.save(p, format='PNG')\n"
           "    with atomic_path(p) as tmp: torch.save(x, tmp)\n"
           "    s = df.to_csv(index=False)\n"
           "    buf = io.BytesIO(); fig.savefig(buf)\n"
           "    with open(p) as f: json.load(f)\n")
    found = non_atomic_writes(src)
    assert [b.split(":")[1] for b in found] == ["3", "4", "5", "6"] and all(": in f: " in b for b in found)
    # a method of the package's own class is checked where it is defined, not at each call
    own = ("def g(p, x, store:Store):\n    store.save('k', x)\n    s2 = Store(p); s2.save('k', x)\n    img.save(p)\n")
    assert [b.split(":")[1] for b in non_atomic_writes(own, own_classes={"Store"})] == ["4"]

def test_every_package_write_is_atomic():
    "Every file the package writes goes through binding_sae.config's atomic helpers (temp name + rename)."
    bad = [b for b in package_non_atomic_writes() if not _known(b)]
    assert not bad, "non-atomic writes (wrap in `with atomic_path(path) as tmp:`):\n" + "\n".join(bad)

def test_known_non_atomic_writes_fixed():
    left = [b for b in package_non_atomic_writes() if _known(b)]
    assert not left, left


# ----------------------------------------------------------------------------------------------------------------
# 5. one writer per folder; manifest and versions; inputs that fit the schema but not each other

def _env_without_locks() -> dict:
    "The environment of a process that was not started by a lock holder."
    return {k: v for k, v in ENV.items() if k != "BINDING_SAE_LOCKS"}

def test_second_writer_is_refused(tmp_path, cfg_file):
    "Two commands on one folder: the second stops at once with one line naming the first; the first finishes normally."
    from binding_sae.experiment import LOCK_NAME, lock_holder
    exp = tmp_path / "exp"
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen([*CLI, "train", "--config", cfg_file, "--experiment_dir", exp], cwd=ROOT,
                             env=_env_without_locks(), stdout=log, stderr=subprocess.STDOUT)
    try:
        t0 = time.time()
        while first.poll() is None and time.time() - t0 < 300:
            if lock_holder(exp / LOCK_NAME).get("pid") == first.pid and (exp / "config.yaml").exists(): break
            time.sleep(0.01)
        assert first.poll() is None, "the first run ended before the second could start"
        r = subprocess.run([*CLI, "run", "--config", cfg_file, "--experiment_dir", exp, "--engine", "direct"],
                           capture_output=True, text=True, cwd=ROOT, env=_env_without_locks(), timeout=300)
        line = assert_user_error(r.returncode, r.stderr, f"{exp} is in use by another process", f"pid {first.pid}",
                                 f"binding-sae train --config {cfg_file}", "started ", "wait for it to finish")
        assert first.poll() is None, f"the second command must not disturb the first: {line}"
        assert first.wait(timeout=600) == 0, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        if first.poll() is None: first.kill()
        log.close()
    assert not (exp / LOCK_NAME).exists()
    assert (exp / "train.done.json").exists()
    assert set(json.loads((exp / "manifest.json").read_text())["steps"]) == {"train"}, "the refused `run` ran steps"

def test_force_with_changed_config_keeps_earlier_steps_in_manifest(tmp_path, reference, capsys):
    "`--force` under a changed config for step 4 only: steps 1-3, whose outputs step 4 reads, stay in manifest.json."
    if not (reference / "ablate.done.json").exists(): pytest.fail("the reference run did not finish step 3")
    exp = copy_experiment(reference, tmp_path / "exp", keep_steps=("train", "identify", "ablate", "knockout"))
    old_hash = json.loads((exp / "manifest.json").read_text())["config_hash"]
    from binding_sae.cli import main
    rc = main(["run", "--config", str(exp / "config.yaml"), "--experiment_dir", str(exp), "--engine", "direct",
               "--force", "--steps", "4", "--set", "evaluation.min_relative_drop=0.2"])
    assert rc == 0, capsys.readouterr().err[-3000:]
    m = json.loads((exp / "manifest.json").read_text())
    assert m["config_hash"] != old_hash
    assert m["steps"]["analyze"]["status"] == "done" and m["steps"]["analyze"]["config_hash"] == m["config_hash"]
    for step in ("train", "identify", "ablate"):
        assert m["steps"].get(step, {}).get("status") == "done", (step, m["steps"])
        assert m["steps"][step]["config_hash"] == old_hash

def test_binding_sae_version_from_a_source_folder(monkeypatch, reference):
    "Run from a source folder (not pip-installed), versions.binding_sae was null; it is the imported code's version."
    import importlib.metadata as md
    import binding_sae
    from binding_sae.experiment import package_versions
    real = md.version
    def not_installed(name):
        if name == "binding_sae": raise md.PackageNotFoundError(name)
        return real(name)
    monkeypatch.setattr(md, "version", not_installed)
    v = package_versions()
    assert v["binding_sae"] == binding_sae.__version__
    if (ROOT / ".git").exists(): assert v.get("binding_sae_commit"), v
    done = json.loads((reference / "train.done.json").read_text())
    assert done["versions"]["binding_sae"] == binding_sae.__version__

def test_training_batch_larger_than_harvest(tmp_path, cfg_file, capsys):
    "training.batch_size above the vectors harvested: stopped before training, with the number of vectors."
    exp = tmp_path / "exp"
    line = main_fails(capsys, "train", "--config", cfg_file, "--experiment_dir", exp, "--set", "training.batch_size=1000000",
                      phrases=["activation vectors were harvested", "training.batch_size (1000000)"])
    import re
    assert re.search(r"Only \d+ activation vectors", line), line
    assert not (exp / "sae").exists() and not (exp / "sae_checkpoint.pt").exists() and not (exp / "train.done.json").exists()
    assert_complete_files(exp)

def test_task_types_overlap_between_roles(tmp_path, cfg_file, capsys):
    "A control task that is the binding task controls for nothing: refused before the model loads."
    exp = tmp_path / "exp"
    main_fails(capsys, "train", "--config", cfg_file, "--experiment_dir", exp,
               "--set", "dataset.control_task_types=[control, binding_choose]",
               phrases=["selected for two roles", "dataset.task_types and dataset.control_task_types overlap"])
    assert set(snapshot(exp)) <= {"config.yaml", "manifest.json"}

def test_model_folder_without_processor(tmp_path, cfg_file, toy_model, capsys):
    "A folder with the weights but no tokenizer / image-processor files: one line naming what to save there."
    bare = tmp_path / "weights_only"; bare.mkdir()
    for f in ("config.json", "model.safetensors"): shutil.copy(toy_model / f, bare / f)
    exp = tmp_path / "exp"
    main_fails(capsys, "train", "--config", cfg_file, "--experiment_dir", exp, "--set", f"model.name={bare}",
               phrases=[str(bare), "has no usable processor", "save_pretrained"])
    assert not (exp / "activations").exists()
    assert_complete_files(exp)


# ----------------------------------------------------------------------------------------------------------------
# the interchange step: it runs in the pipeline; too few pairs, a missing or unreadable twins file are refused

def test_interchange_in_the_pipeline(reference):
    "The uninterrupted run swapped features between the world's twins on test questions only, with the ablation's null."
    r = json.loads((reference / "results" / "interchange_results.json").read_text())
    ab = json.loads((reference / "results" / "ablation_results.json").read_text())
    assert r["metadata"]["pairs"]["source"] == "twins" and r["conditions"], r["metadata"]
    import csv
    split = {row["question_id"]: row["split"] for row in csv.DictReader(open(reference / "splits.csv"))}
    for c in r["conditions"]:
        assert c["n_pairs"] >= 2 and c["random"]["feature_sets"] == ab["conditions"][0]["random"]["feature_sets"]
        assert {split[q] for q in c["question_id"]} == {"test"}
    report = json.loads((reference / "analysis" / "hypothesis_report.json").read_text())
    assert report["interchange"]["tasks"] and report["summary"]["interchange_headline"].startswith("Interchange ")

def _world_copy(world:Path, dst:Path, twins:str|None=None) -> Path:
    "A copy of the session's world (images linked) with no twins file, or with `twins` as its text."
    dst.mkdir()
    shutil.copy(world / "questions.csv", dst)
    (dst / "images").symlink_to(world / "images")
    if twins is not None: (dst / "counterfactuals.csv").write_text(twins)
    return dst

def _on_world(w:Path, *extra) -> list:
    return ["--set", f"dataset.refined_dataset={w / 'questions.csv'}", "--set", f"dataset.image_folder={w / 'images'}",
            "--set", "dataset.world=null", *extra]

def test_interchange_twins_missing_refused_before_work(tmp_path, cfg_file, world):
    w = _world_copy(world, tmp_path / "w")
    exp = tmp_path / "exp"
    cli_fails("run", "--config", cfg_file, "--experiment_dir", exp, *_on_world(w, "--set", "interchange.pairs=twins"),
              phrases=["interchange.pairs is 'twins' but there is no", "counterfactuals.csv", "interchange.pairs: same_question"])
    assert not exp.exists()

def test_interchange_twins_unreadable_refused_before_work(tmp_path, cfg_file, world):
    w = _world_copy(world, tmp_path / "w", twins="question_id,kind\nq1,swap\n")
    exp = tmp_path / "exp"
    cli_fails("run", "--config", cfg_file, "--experiment_dir", exp, *_on_world(w),
              phrases=["does not have the twin columns", "write the twins again"])
    assert not exp.exists()

def test_interchange_too_few_pairs(tmp_path, sets, reference):
    "Fewer usable pairs than interchange.min_pairs: one sentence naming the fixes, and no interchange results."
    exp = copy_experiment(reference, tmp_path / "exp", keep_steps=("train", "identify", "ablate"))
    (exp / "results" / "interchange_results.json").unlink()
    cli_fails("interchange", "--config", SMOKE, "--experiment_dir", exp, "--engine", "direct", *sets, "--force",
              "--set", "interchange.min_pairs=100000",
              phrases=["fewer than interchange.min_pairs = 100000", "lower interchange.min_pairs", "interchange.enabled: false"])
    assert not (exp / "results" / "interchange_results.json").exists()
    assert not (exp / "results" / ".partial" / "interchange").exists()


def test_object_flows_without_boxes_refused_before_work(tmp_path, cfg_file, world):
    "An object-level knockout flow on a question CSV without the central object's box: refused by the pre-run check."
    w = _world_copy(world, tmp_path / "w")
    q = (w / "questions.csv").read_text().splitlines()
    cols = q[0].split(",")
    keep = [i for i, c in enumerate(cols) if not c.startswith("central object ")]
    import csv, io
    rows = list(csv.reader(io.StringIO("\n".join(q))))
    out = io.StringIO(); csv.writer(out).writerows([[r[i] for i in keep] for r in rows])
    (w / "questions.csv").write_text(out.getvalue())
    exp = tmp_path / "exp"
    cli_fails("run", "--config", cfg_file, "--experiment_dir", exp, "--dry_run",
              *_on_world(w, "--set", "knockout.flows=[Image Central Object->Last]", "--set", "interchange.enabled=false"),
              phrases=["need the asked object's box", "central object x"])
    assert not exp.exists()

def test_interchange_twins_whose_positions_differ(tmp_path, sets, reference, world):
    "Twins that ask another question would put other words at the edited positions: left out, so too few pairs remain."
    import csv, io
    src = world / "counterfactuals.csv"
    assert src.exists(), "the session's world got its twins from the pipeline run"
    rows = list(csv.DictReader(io.StringIO(src.read_text())))
    for r in rows: r["question"] = r["question"].replace("Is the ", "Is that ")
    out = io.StringIO(); wr = csv.DictWriter(out, fieldnames=list(rows[0])); wr.writeheader(); wr.writerows(rows)
    w = _world_copy(world, tmp_path / "w", twins=out.getvalue())
    exp = copy_experiment(reference, tmp_path / "exp", keep_steps=("train", "identify", "ablate"))
    (exp / "results" / "interchange_results.json").unlink()
    cli_fails("interchange", "--config", SMOKE, "--experiment_dir", exp, "--engine", "direct", *sets, "--force",
              *_on_world(w, "--set", "interchange.pairs=twins"),
              phrases=["Only 0 counterfactual pairs", "lower interchange.min_pairs"])
    assert not (exp / "results" / "interchange_results.json").exists()
