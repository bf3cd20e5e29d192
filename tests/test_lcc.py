"Tests of Latent Cluster Correction that do not fit in nbs/10_lcc.ipynb: the headline LCC-vs-CE comparison, the CLI, resume and DDP."
import json, os, subprocess, sys

import numpy as np
import pytest
import torch

from lcc_nb.core import list_checkpoints
from lcc_nb.data import get_dataset
from lcc_nb.lcc import LCCPlugin, cluster_latents, correction_targets, lcc_distances, lcc_loss, misclustered_mask
from lcc_nb.metrics import match_clusters_to_classes
from lcc_nb.models import get_model
from lcc_nb.train import Trainer, TrainConfig, fit, launch

LCC_NB = os.path.join(os.path.dirname(sys.executable), "lcc_nb")


def small_cnn(seed):
    "The headline model: `lcc/small_cnn` from config (BatchNorm off: eval-mode targets vs train-mode latents)."
    torch.manual_seed(seed)
    return get_model("lcc/small_cnn", 10, width=16, hidden=64, batchnorm=False)


def test_matching_and_split_by_hand():
    y_true = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    y_cluster = np.array([5, 5, 6, 6, 6, 7, 7, -1])      # community 6 is mostly class 1; -1 is an outlier
    matching = match_clusters_to_classes(y_true[y_cluster >= 0], y_cluster[y_cluster >= 0])
    assert matching == {5: 0, 6: 1, 7: 1}
    mc = misclustered_mask(y_true, y_cluster, matching)
    assert mc.tolist() == [False, False, True, False, False, False, True, True]


def test_mc_and_cc_disjoint_and_one_step_reduces_distance():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 5, (4, 6))
    y = np.repeat(np.arange(4), 50)
    x = (centres[y] + rng.normal(0, 0.4, (200, 6))).astype(np.float32)
    x[:8] = centres[(y[:8] + 1) % 4] + rng.normal(0, 0.4, (8, 6))   # 8 samples inside the next class's blob
    clusters = cluster_latents(x, y, k=5)
    assert set(np.flatnonzero(clusters.misclustered)) == set(range(8))
    targets = correction_targets(x, clusters, k=5)
    cc_rows = {r.tobytes() for ts in targets.by_class.values() for t in ts for r in t.numpy()}
    assert not cc_rows & {r.tobytes() for r in x[clusters.misclustered]}          # MC ∩ CC = ∅
    assert len(cc_rows) == (~clusters.misclustered).sum()                         # MC ∪ CC = all

    z = torch.tensor(x, requires_grad=True)
    yt, index = torch.as_tensor(y), torch.arange(len(x))
    opt = torch.optim.SGD([z], lr=5.0)
    before = lcc_loss(z, yt, index, targets)
    before.backward(); opt.step()
    mc = targets.misclustered
    after = lcc_distances(z[mc], yt[mc], targets.by_class, targets.k)
    assert after.mean() < before.item() - 0.05
    assert torch.equal(z.detach()[~mc], torch.tensor(x)[~mc])                     # CC samples do not move


def lcc_vs_ce(seeds=(0, 1), epochs=6):
    "Mean MC fraction and NMI (epochs ≥ 1) and test accuracy of LCC (weight 1) and CE-only (weight 0) runs."
    train, test = get_dataset("digits", "train"), get_dataset("digits", "test")
    out = {}
    for weight in (0.0, 1.0):
        rows = []
        for seed in seeds:
            plugin = LCCPlugin("fc1", weight=weight, k=5)
            result = fit(small_cnn(seed), train, test_data=test, plugins=[plugin], epochs=epochs, batch_size=64,
                         optimizer="adam", lr=3e-3, seed=seed, progress=False)
            later = plugin.history[1:]
            rows.append((np.mean([h["fc1/misclustered_fraction"] for h in later]), np.mean([h["fc1/nmi"] for h in later]),
                         result.test_metrics["test_acc"]))
        out["lcc" if weight else "ce"] = np.mean(rows, axis=0)
    return out


def test_lcc_lowers_mc_fraction_and_raises_nmi_at_equal_accuracy():
    r = lcc_vs_ce()
    print({k: np.round(v, 4).tolist() for k, v in r.items()})
    (mc_ce, nmi_ce, acc_ce), (mc_lcc, nmi_lcc, acc_lcc) = r["ce"], r["lcc"]
    assert mc_lcc < mc_ce - 0.03, r
    assert nmi_lcc > nmi_ce + 0.03, r
    assert abs(acc_lcc - acc_ce) < 0.04, r


def test_cli_train_writes_checkpoints_logs_results(tmp_path):
    out = tmp_path/"run"
    cmd = [LCC_NB, "train", "lcc/small_cnn", "digits", str(out), "--lcc-submodules", "fc1", "--lcc-weight", "1",
           "--lcc-loss", "randomized", "--lcc-ccspc", "20", "--max-epochs", "2", "--lcc-warmup", "1", "--batch-size", "128",
           "--optimizer", "adam", "--lr", "3e-3", "--no-progress", "--seed", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out/"results.json").read_text())
    assert results["hyper_parameters"]["lcc_loss"] == "randomized" and results["hyper_parameters"]["seed"] == 1
    assert results["test_metrics"]["test_acc"] > 0.3 and results["time_s"] > 0
    assert [h["epoch"] for h in results["lcc_history"]] == [1]
    assert os.path.exists(results["best_checkpoint"]) and list_checkpoints(out/"checkpoints")
    header = (out/"logs"/"epochs.csv").read_text().splitlines()[0]
    assert "lcc/fc1/misclustered_fraction" in header and "train_lcc_loss" in header
    assert json.loads(proc.stdout.strip().splitlines()[-1])["test_metrics"]["test_acc"] == results["test_metrics"]["test_acc"]


def test_cli_bad_submodule_names_the_choices(tmp_path, capsys):
    from lcc_nb.cli import main
    with pytest.raises(SystemExit) as e:
        main(["train", "lcc/small_cnn", "digits", str(tmp_path/"bad"), "--lcc-submodules", "fc", "--max-epochs", "1", "--no-progress"])
    assert e.value.code == 2 and "fc1" in capsys.readouterr().err


def test_resume_mid_lcc_epoch_matches_uninterrupted(tmp_path):
    train = get_dataset("digits", "train")
    def run(out, resume):
        plugin = LCCPlugin("fc1", weight=1.0)
        config = TrainConfig(epochs=2, batch_size=128, optimizer="adam", lr=3e-3, deterministic=True, progress=False,
                             out_dir=str(out), every_n_steps=4, resume=resume)
        trainer = Trainer(small_cnn(0), train, config=config, plugins=[plugin])
        trainer.fit()
        return trainer.model.state_dict(), plugin
    full, full_plugin = run(tmp_path/"full", False)
    mid = [p for p in list_checkpoints(tmp_path/"full"/"checkpoints") if 12 < int(p.stem.split("-")[1]) < 24][0]  # inside epoch 1
    resumed, resumed_plugin = run(tmp_path/"resumed", str(mid))
    for k in full: assert torch.equal(full[k], resumed[k]), k
    assert resumed_plugin.history == full_plugin.history


def _two_process_history(seed):
    plugin = LCCPlugin("fc1", weight=1.0)
    fit(small_cnn(seed), get_dataset("digits", "train"), plugins=[plugin], epochs=1, batch_size=64, progress=False)
    return plugin.history


def test_ddp_gathers_latents_by_sample_index():
    single = _two_process_history(0)
    double = launch(_two_process_history, 0, nprocs=2, backend="gloo")
    keys = ["fc1/n_misclustered", "fc1/n_clusters", "fc1/nmi"]
    assert [double[0][k] for k in keys] == pytest.approx([single[0][k] for k in keys])
