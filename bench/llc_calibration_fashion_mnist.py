"""LLC over the checkpoints of a Fashion-MNIST run, calibrated first (issue #15).

1. Train `lcc/small_cnn` with cross-entropy on a stratified, seeded 5,000 / 2,000 subset of Fashion-MNIST
   (`lcc_nb.runs.subset_preset`), a checkpoint at step 0 and after every epoch.
2. Calibrate SGLD at the final checkpoint: `lcc_nb run llc_calibration` (ε × γ grid, recommendation).
3. `lcc_nb run llc_checkpoints` over every checkpoint with the recommended ε and γ.
4. Train / test loss and accuracy of every checkpoint (eval mode) beside its LLC: bench/results/llc_fashion_mnist.md.

Needs the Fashion-MNIST idx files under data/FashionMNIST/raw (issue #15: Debian's dataset-fashion-mnist).

    OMP_NUM_THREADS=1 .venv/bin/python bench/llc_calibration_fashion_mnist.py
"""
import json, os, shlex, subprocess, sys, time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch

sys.path.insert(0, str(Path(__file__).parent))
from llc_calibration import loss_and_accuracy   # noqa: E402  (bench/llc_calibration.py)

ROOT = Path(__file__).resolve().parents[1]
RESULTS, WORK = ROOT/"bench"/"results", ROOT/"_runs"/"llc_fashion_mnist"
LCC_NB = str(ROOT/".venv"/"bin"/"lcc_nb")
DATA = dict(dataset="fashion_mnist", train_size=5000, test_size=2000, seed=0)
TRAIN = dict(epochs=5, batch_size=64, lr=0.05, scheduler="cosine", seed=0)
GRID = dict(epsilons=[1e-5, 3e-5, 1e-4], gammas=[1e3, 1e4], num_chains=2, num_draws=120, batch_size=32)  # the grid has 2 chains per point
CHECKPOINTS = dict(num_chains=2, num_draws=150, batch_size=32)

def subset():
    from lcc_nb.data import get_dataset
    from lcc_nb.runs import subset_preset
    name = subset_preset(DATA["dataset"], DATA["train_size"], DATA["test_size"], DATA["seed"])
    return get_dataset(name, "train"), get_dataset(name, "test")

def train() -> dict:
    "The CE run (or its record when it exists): checkpoints in WORK/train/checkpoints."
    from lcc_nb.models import get_model
    from lcc_nb.train import fit
    record = WORK/"train"/"training.json"
    if record.exists(): return json.loads(record.read_text())
    train_ds, test_ds = subset()
    t0, cpu0 = time.perf_counter(), time.process_time()
    fit(get_model("lcc/small_cnn", 10, in_chans=1), train_ds, test_data=test_ds, out_dir=str(WORK/"train"),
        checkpoint_steps=[0], progress=False, **TRAIN)
    info = {"settings": TRAIN, "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - cpu0}
    record.write_text(json.dumps(info, indent=1))
    return info

def lcc_nb_run(notebook:str, out:Path, **params) -> tuple[str, dict]:
    "Run `lcc_nb run notebook -p ...`; the command line and its metrics (cached: an existing metrics.json is reused)."
    argv = [LCC_NB, "run", notebook, *[a for k, v in params.items() for a in ("-p", k, str(v))], "--out-dir", str(out), "--quiet"]
    command = shlex.join(["lcc_nb", *argv[1:]]).replace(str(ROOT) + "/", "")
    if not (out/"metrics.json").exists():
        t0, cpu0 = time.perf_counter(), os.times()
        subprocess.run(argv, check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
        cpu1 = os.times()
        (out/"timing.json").write_text(json.dumps({"seconds": time.perf_counter() - t0,
                                                   "cpu_seconds": cpu1.children_user + cpu1.children_system - cpu0.children_user - cpu0.children_system}))
    return command, {**json.loads((out/"metrics.json").read_text()), **json.loads((out/"timing.json").read_text())}

def checkpoint_scores(checkpoint_dir:Path):
    "Train / test loss and accuracy (eval mode) of every checkpoint, keyed by step."
    from lcc_nb.core import list_checkpoints, load_checkpoint
    from lcc_nb.models import get_model
    train_ds, test_ds = subset()
    scores = {}
    for path in list_checkpoints(checkpoint_dir):
        state, net = load_checkpoint(path), get_model("lcc/small_cnn", 10, in_chans=1)
        net.load_state_dict(state["model"])
        tr, te = loss_and_accuracy(net, train_ds), loss_and_accuracy(net, test_ds)
        scores[int(state["step"])] = {"epoch": state["epoch"], "train_loss": tr["loss"], "train_acc": tr["acc"],
                                      "test_loss": te["loss"], "test_acc": te["acc"]}
    return scores

def calibration_table(out:Path) -> str:
    import pandas as pd
    sys.path.insert(0, str(Path(__file__).parent))
    from llc_calibration import markdown_table
    return markdown_table(pd.read_csv(out/"calibration"/"calibration.csv").to_dict("records"))

def main():
    torch.set_num_threads(1)
    WORK.mkdir(parents=True, exist_ok=True)
    training = train()
    checkpoint_dir = WORK/"train"/"checkpoints"
    from lcc_nb.core import list_checkpoints
    final = list_checkpoints(checkpoint_dir)[-1]
    data = {k: v for k, v in DATA.items()}
    cal_command, cal = lcc_nb_run("llc_calibration", WORK/"calibration", **data, model="lcc/small_cnn", checkpoint=final,
                                  **GRID)
    results = json.loads((WORK/"calibration"/"calibration"/"results.json").read_text())
    reasons = results["method"]["reasons"]
    llc_command, llc = lcc_nb_run("llc_checkpoints", WORK/"checkpoints", **data, model="lcc/small_cnn",
                                  checkpoint_dir=checkpoint_dir, epsilon=cal["epsilon"], gamma=cal["gamma"], **CHECKPOINTS)
    import pandas as pd
    table = pd.read_csv(WORK/"checkpoints"/"llc"/"llc_over_training.csv")
    scores = checkpoint_scores(checkpoint_dir)
    rows = ["| epoch | step | λ̂ mean | λ̂ std | MALA | train loss | train acc | test loss | test acc |", "|---|---|---|---|---|---|---|---|---|"]
    for r in table.to_dict("records"):
        s = scores[int(r["step"])]
        rows.append(f"| {s['epoch']} | {int(r['step'])} | {r['llc_mean']:.3g} | {r['llc_std']:.3g} | {r['mala_acceptance']:.3g} | "
                    f"{s['train_loss']:.4f} | {s['train_acc']:.4f} | {s['test_loss']:.4f} | {s['test_acc']:.4f} |")
    text = ["# LLC over the checkpoints of a Fashion-MNIST run, calibrated first (issue #15)", "",
            "Produced by `OMP_NUM_THREADS=1 .venv/bin/python bench/llc_calibration_fashion_mnist.py` (one CPU thread; the "
            "machine's 2 cores shared with other jobs, so wall ≈ 2 × CPU).", "",
            f"**Data**: `subset_preset('fashion_mnist', 5000, 2000, seed=0)` — stratified, seeded subsets of the train and test "
            f"splits. **Run**: `lcc/small_cnn`, cross-entropy, `fit(..., {', '.join(f'{k}={v!r}' for k, v in TRAIN.items())})`, "
            f"checkpoints at step 0 and after every epoch — {training['seconds']:.0f} s wall, {training['cpu_seconds']:.0f} s CPU.", "",
            "## 1. Calibration at the final checkpoint", "", f"`{cal_command}`", "",
            f"2 chains × {GRID['num_draws']} draws per grid point, minibatch {GRID['batch_size']}, seed 0, common seeding — "
            f"{cal['seconds']:.0f} s wall, {cal['cpu_seconds']:.0f} s CPU (the notebook then runs {GRID['num_chains']} chains at the recommended "
            f"point: λ̂ {cal['llc_mean']:.3g} ± {cal['llc_std']:.3g}, MALA {cal['mala_acceptance']:.3g}).", "",
            calibration_table(WORK/"calibration"), "", *[f"> {r}" for r in reasons], "",
            "## 2. LLC over the checkpoints at the recommended ε, γ", "", f"`{llc_command}`", "",
            f"{CHECKPOINTS['num_chains']} chains × {CHECKPOINTS['num_draws']} draws per checkpoint, ε={cal['epsilon']:g}, "
            f"γ={cal['gamma']:g}, seed 0 — {llc['seconds']:.0f} s wall, {llc['cpu_seconds']:.0f} s CPU. Loss and accuracy: "
            "eval mode, over the 5,000 train / 2,000 test images.", "", *rows, ""]
    (RESULTS/"llc_fashion_mnist.md").write_text("\n".join(text))
    print("\n".join(text))

if __name__ == "__main__":
    main()
