"""The one command line: every method command is generated from its configs, a seed makes a CLI run reproducible,
the reference spellings still parse, and `--help` stays instant."""
import json, os, subprocess, sys, time

import pytest
import torch

from lcc_nb.cli import COMMANDS, build_parser, command_settings, find_command, load, skipped
from lcc_nb.core import list_checkpoints

LCC_NB = os.path.join(os.path.dirname(sys.executable), "lcc_nb")
TINY_VIT = '{"patch_size": 4, "depth": 2, "embed_dim": 16, "num_heads": 2}'
TINY_RUNS = {   # each method on digits, seconds on a CPU; {out} is the output folder
    "train": ["lcc/small_cnn", "digits", "{out}", "--lcc-submodules", "fc1", "--epochs", "2", "--batch-size", "128",
              "--optimizer", "adam", "--lr", "3e-3", "--no-progress", "--seed", "3"],
    "deepcluster": ["--model", "lcc/small_cnn", "--k", "5", "--pca-dim", "8", "--epochs", "1", "--batch-size", "128",
                    "--no-progress", "--out-dir", "{out}", "--seed", "3"],
    "cd": ["--model", "lcc/feedforward", "--feature-num", "8", "--epochs", "1", "--batch-size", "256", "--eval-every", "1",
           "--eval-subset", "100", "--no-progress", "--out-dir", "{out}", "--seed", "3"],
    "llb": ["--backbone", "timm/vit_tiny_patch16_224", "--backbone_config", f"patch_size=4", "--backbone_config", "depth=2",
            "--backbone_config", "embed_dim=16", "--backbone_config", "num_heads=2", "--image_size", "8", "--crop_pct", "1",
            "--in_chans", "1", "--target_layer", "1", "--object_size", "8", "--num_nvit_layers", "2", "--no-randaugment",
            "--epochs", "1", "-b", "64", "--opt", "Adam", "--lr_scheduler", "CosineAnnealingLR", "--no-progress",
            "--save_dir", "{out}", "--seed", "3"],
}

def _numbers(results:dict) -> dict:
    "The metrics of a results.json, without timings and paths (which differ between two identical runs)."
    def keep(d): return {k: v for k, v in d.items() if "time" not in k and "checkpoint" not in k and not isinstance(v, (dict, list))}
    return {part: keep(results.get(part) or {}) for part in ("final", "best", "test", "method")}

def _run(command:str, out) -> tuple[dict, dict]:
    args = [a.format(out=out) for a in TINY_RUNS[command]]
    proc = subprocess.run([LCC_NB, command, *args], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((out/"results.json").read_text())
    weights = torch.load(list_checkpoints(out/"checkpoints")[-1], weights_only=True)["model"]
    return results, weights

@pytest.mark.parametrize("command", list(TINY_RUNS))
def test_same_seed_same_run(tmp_path, command):
    "Each method's CLI run twice with the same --seed gives identical weights and metrics."
    (first, w1), (second, w2) = _run(command, tmp_path/"a"), _run(command, tmp_path/"b")
    assert _numbers(first) == _numbers(second)
    assert first["test"] or first["method"], "the run reported no metrics"
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    assert first["config"]["train"]["seed"] == 3 and first["method"]["name"]
    assert (tmp_path/"a"/"results.json").stat().st_mode & 0o044, "results.json must be readable by others (not 0600)"

def test_every_setting_is_an_option_under_its_name():
    for command in COMMANDS:
        if not command.roles: continue
        offered = command_settings(command)
        for cls in load(command.roles).values():
            for name in cls.__dataclass_fields__:
                if name in skipped(command): assert name not in offered; continue
                assert offered.get(name) in ("--" + name.replace("_", "-"), name), (command.name, name)

def test_reference_spellings_parse():
    "altaris/lcc's short flags and LLB's underscore flags and value spellings reach the one names."
    from lcc_nb.cli import normalise_flags
    args = build_parser(["train"]).parse_args(["train", "m", "digits", "out", "-ls", "fc1", "-lw", "2", "-e", "3", "-bs", "8",
                                               "--lcc-ccspc", "7", "--reload", "-cw", "0.5"])
    assert (args.lcc_submodules, args.lcc_weight, args.epochs, args.batch_size, args.resume, args.loss_weight) == ("fc1", 2.0, 3, 8, True, 0.5)
    assert args.lcc_samples_per_community == 7
    argv = normalise_flags(["llb", "--opt", "Adam", "--lr_scheduler", "StepLR", "--data_dir", "d", "--save_dir", "o"])
    args = build_parser(argv).parse_args(argv)
    assert (args.optimizer, args.scheduler, args.root, args.out_dir) == ("adam", "step", "d", "o")

def test_bad_value_exits_with_the_choices(capsys):
    from lcc_nb.cli import main
    with pytest.raises(SystemExit) as e: main(["cd", "--optimizer", "adamm", "--epochs", "0"])
    assert e.value.code == 2 and "Did you mean 'adam'" in capsys.readouterr().err

@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["llb", "--help"]])
def test_help_is_instant_and_imports_no_torch(args):
    program = f"import sys\nfrom lcc_nb.cli import main\ntry: main({args!r})\nexcept SystemExit: pass\nassert 'torch' not in sys.modules"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert time.perf_counter() - start < 3   # ~0.3 s here; generous for a loaded CI machine

def test_every_setting_is_a_run_notebook_parameter():
    "A method's run notebook accepts every setting of its command under the one name (and rejects a typo)."
    from lcc_nb.core import ChoiceError
    from lcc_nb.runs import check_parameters, list_run_notebooks, notebook_command
    commands = {n: notebook_command(n) for n in list_run_notebooks()}
    assert {"train", "deepcluster", "cd", "llb"} <= set(commands.values())
    for notebook, name in commands.items():
        if name is None: continue
        command = find_command(name)
        settings = [f for cls in load(command.roles).values() for f in cls.__dataclass_fields__ if f not in skipped(command)]
        check_parameters(notebook, dict.fromkeys(settings, 1))
        with pytest.raises(ChoiceError): check_parameters(notebook, {"epochz": 1})

def test_a_setting_passed_to_a_run_notebook_reaches_the_run(tmp_path):
    "`lcc_nb run train_lcc -p lcc_samples_per_community 7` ends up in the run's recorded config."
    out = tmp_path/"run"
    proc = subprocess.run([LCC_NB, "run", "train_lcc", "-p", "smoke", "True", "-p", "lcc_loss", "randomized",
                           "-p", "lcc_ccspc", "7", "-p", "epochs", "1", "--out-dir", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((out/"results.json").read_text())["config"]
    assert config["config"]["lcc_samples_per_community"] == 7 and config["config"]["lcc_loss"] == "randomized"
