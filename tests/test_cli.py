"""The one command line: every method command is generated from its configs, the reference spellings still parse, and `--help` stays instant."""
import json, os, subprocess, sys, time

import pytest

from lcc_nb.cli import COMMANDS, build_parser, command_settings, find_command, load, skipped

LCC_NB = os.path.join(os.path.dirname(sys.executable), "lcc_nb")
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


def test_global_logging_level_before_the_command(tmp_path):
    "`lcc_nb --logging-level DEBUG train ...`, as altaris/lcc's lcc.sh writes it: the level reaches the Python loggers."
    import logging
    from lcc_nb.cli import main
    root, before = logging.getLogger(), logging.getLogger().level
    try:
        assert main(["--logging-level", "DEBUG", "train", "--epochs", "0", "--test-split", "", "--no-progress"]) == 0
        assert root.level == logging.DEBUG
    finally: root.setLevel(before)
    with pytest.raises(SystemExit): main(["--logging-level", "verbose", "train", "--epochs", "0"])


def test_llb_reference_options_parse():
    "LLB's reference options lcc_nb lacked: --save, --encoder (not an abbreviation of --encoder_weight), --rep, --nv_weights, --class_num, --wandb."
    from lcc_nb.cli import normalise_flags
    argv = normalise_flags(["llb", "--save", "--encoder", "ViT", "--encoder_weight", "w.pt", "--rep", "--nv_weights", "llb.pt",
                            "--class_num", "365", "--wandb", "--vit_size", "Large", "--dataset", "Places365"])
    args = build_parser(argv).parse_args(argv)
    assert (args.every_epoch, args.encoder, args.encoder_weight, args.rep, args.nv_weights, args.class_num, args.loggers) == \
           (True, "ViT", "w.pt", True, "llb.pt", 365, "csv,jsonl,wandb")
    assert build_parser(["llb", "--no-save"]).parse_args(["llb", "--no-save"]).every_epoch is False

def test_luftmeer_spellings_parse():
    "luftmeer's option spellings reach the one names with its meanings (store_false --requires_grad, --ds_train, value spellings)."
    from lcc_nb.cli import normalise_flags
    argv = normalise_flags(["deepcluster", "--requires_grad", "--ds_train", "--reassign_clustering", "--loss_fn", "CrossEntropy",
                            "--optimizer_tl", "Adam", "--lr_tl", "0.01", "--beta1_tl", "0.8", "--beta2", "0.99", "--pca_reduction", "64",
                            "--pca_whitening", "--contrastive_strategy_2", "--augmentation_random_crop", "24",
                            "--augmentation_color_jitter", "--arch", "VGG16", "--input_dim", "3", "--param_requires_grad"])
    args = build_parser(argv).parse_args(argv)
    assert (args.input_requires_grad, args.train_split, args.fixed_kmeans_seed, args.pseudo_label_loss) == (False, "train", False, "cross_entropy")
    assert (args.top_optimizer, args.top_lr, args.top_momentum, args.beta2, args.pca_dim, args.whiten) == ("adam", 0.01, 0.8, 0.99, 64, True)
    assert (args.contrastive, args.random_crop, args.color_jitter, args.model, args.in_chans) == ("two_views", 24, True, "lcc/vgg16", 3)
    assert args.param_requires_grad is True
