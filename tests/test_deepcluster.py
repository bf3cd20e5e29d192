"DeepCluster end to end on digits: the headline (pseudo-labels beat the baselines), both contrastive strategies, run_deepcluster, resume."
import json, math

import numpy as np
import pytest
import torch

from lcc_nb.clustering import kmeans
from lcc_nb.data import get_dataset
from lcc_nb.config import run_configs
from lcc_nb.deepcluster import DeepClusterPlugin, build_deepcluster, run_deepcluster
from lcc_nb.deepcluster_config import DEEPCLUSTER_ROLES
from lcc_nb.train import Plugin, Trainer
from lcc_nb.metrics import nmi

# The digits configuration measured for the headline (lcc/small_cnn from config, random weights, CPU).
# pca_dim=16: whitening all 128 feature dimensions amplifies noise directions and the pseudo-labels do not improve;
# 16 whitened components let them rise steadily (measured: pca_dim 128 → no gain, 32 → 0.74→0.76–0.83, 16 → 0.63→0.83).
DIGITS = dict(dataset="digits", model="lcc/small_cnn", k=10, pca_dim=16, epochs=10, batch_size=64, min_crop_scale=0.5,
              hflip=False, progress=False, seed=0)


def raw_pixel_nmi(seeds=(0, 1, 2)) -> float:
    "Best NMI of k-means (k=10) on the raw 64 pixels of the digits training split, over a few seeds."
    ds = get_dataset("digits", "train")
    pixels = np.stack([ds[i][0].numpy().ravel() for i in range(len(ds))])
    return max(nmi(ds.targets, kmeans(pixels, 10, seed=s).labels) for s in seeds)


def test_headline_pseudo_labels_beat_baselines_and_stabilise():
    run = run_deepcluster(**DIGITS)
    metrics, history = run.metrics, run.train.history
    raw = raw_pixel_nmi()
    consecutive = [row["nmi_prev"] for row in history[-3:]]
    print(f"initial {metrics['initial_nmi']:.3f} final {metrics['nmi']:.3f} raw pixels {raw:.3f} consecutive {consecutive}")
    # Measured (CPU, this configuration; the test runs seed 0):
    #   seed 0: untrained-network NMI (epoch 0's pseudo-labels) 0.63 → final 0.826; consecutive NMI 0.61 at epoch 1,
    #           0.92 / 0.92 / 0.96 over the last three epochs;
    #   seeds 1, 2 (not run here): 0.77 → 0.834 and 0.68 → 0.822; last consecutive NMIs 0.91–0.95 and 0.77–0.80;
    #   k-means (k=10) on raw pixels: 0.735 / 0.718 / 0.757 for seeds 0 / 1 / 2.
    # Thresholds with room for platform differences (float order, BLAS threads) that still fail when training does not
    # help: +0.10 over the untrained features (measured +0.20), +0.03 over the best raw-pixel seed (measured +0.07),
    # consecutive assignments agreeing (> 0.8, measured ≥ 0.92) and clearly more than at the first re-clustering.
    assert metrics["nmi"] > metrics["initial_nmi"] + 0.10
    assert metrics["nmi"] > raw + 0.03
    assert min(consecutive) > 0.8 and np.mean(consecutive) > history[1]["nmi_prev"] + 0.15
    assert not metrics["collapsed"] and metrics["clusters_empty"] == 0


@pytest.mark.parametrize("contrastive", ["margin", "supcon", "two_views"])
def test_contrastive_strategies_train_without_collapse(contrastive):
    run = run_deepcluster(**{**DIGITS, "epochs": 2, "contrastive": contrastive})
    metrics, last = run.metrics, run.train.history[-1]
    print(contrastive, {k: round(v, 3) for k, v in last.items() if k.startswith(("train_", "nmi", "largest"))})
    assert math.isfinite(last["train_loss"]) and last["train_contrastive"] > 0
    assert last["train_loss"] > last["train_ce"]                       # the contrastive term is part of the loss
    assert not metrics["collapsed"] and metrics["largest_cluster_fraction"] < 0.3 and metrics["clusters_non_empty"] == 10
    assert metrics["nmi"] > 0.5                                         # pseudo-labels stay informative


SMALL = {**DIGITS, "k": 5, "pca_dim": 8, "batch_size": 128}


def test_run_writes_results_then_resumes(tmp_path):
    first = run_deepcluster(**{**SMALL, "epochs": 1}, out_dir=str(tmp_path))
    assert first.results["epochs"] == 1 and first.results["method"]["name"] == "deepcluster"
    second = run_deepcluster(**{**SMALL, "epochs": 2}, out_dir=str(tmp_path), resume=True)
    saved = json.loads((tmp_path/"results.json").read_text())
    assert saved["epochs"] == 2 and len(saved["history"]) == 2 and saved["method"]["nmi"] == second.metrics["nmi"]
    assert saved["config"]["config"]["k"] == 5 and saved["config"]["model"]["model"] == "lcc/small_cnn"
    assert "nmi_prev" in saved["history"][1]            # the previous epoch's labels came back from the checkpoint
    assert not (tmp_path/"deepcluster_metrics.json").exists()


def test_same_seed_same_weights_and_metrics():
    "Seeded before anything is built: two runs with the same seed agree exactly (the CLI runs this same function)."
    runs = [run_deepcluster(**{**SMALL, "epochs": 2, "seed": 3}) for _ in range(2)]
    for name, weights in runs[0].model.state_dict().items(): assert torch.equal(weights, runs[1].model.state_dict()[name]), name
    assert runs[0].metrics == runs[1].metrics
    np.testing.assert_array_equal(runs[0].labels, runs[1].labels)


class CrashAt(Plugin):
    "Simulates a killed run: raises after optimizer step `step`."
    def __init__(self, step): self.step = step
    def after_step(self, trainer):
        if trainer.step == self.step: raise KeyboardInterrupt(f"crash at step {self.step}")


def _run_two_epochs(out_dir, crash_at=None, resume=False):
    "2 epochs of 12 steps, checkpoints every 4 steps; returns (model, plugin) — or None when it crashed."
    configs = run_configs("deepcluster", DEEPCLUSTER_ROLES, settings={**SMALL, "epochs": 2, "out_dir": str(out_dir), "resume": resume,
                                                                     "every_n_steps": 4})
    model, plugin, _ = build_deepcluster(configs)
    trainer = Trainer(model, plugin.train_data, config=configs["train"], plugins=[plugin] + ([CrashAt(crash_at)] if crash_at else []))
    try: trainer.fit()
    except KeyboardInterrupt: return None
    return model, plugin


def test_resume_mid_epoch_reuses_pseudo_labels_and_head(tmp_path):
    reference_model, reference = _run_two_epochs(tmp_path/"reference")
    assert _run_two_epochs(tmp_path/"crashed", crash_at=18) is None      # last checkpoint: step 16, mid-epoch 2
    model, plugin = _run_two_epochs(tmp_path/"crashed", resume=True)
    np.testing.assert_array_equal(plugin.labels, reference.labels)
    for name, value in reference.head.state_dict().items(): assert torch.equal(value, plugin.head.state_dict()[name]), name
    for name, value in reference_model.state_dict().items(): assert torch.equal(value, model.state_dict()[name]), name


class HeadProbe(Plugin):
    "Records, at each epoch start, the DeepCluster head object and how many parameters its new optimizer has state for."
    def __init__(self, plugin): self.plugin, self.heads, self.optimizer_states = plugin, [], []
    def on_epoch_start(self, trainer): self.heads.append(self.plugin.head)
    def optimizers(self, trainer):
        self.optimizer_states.append(len(self.plugin.head_optimizer.state))
        return []


@pytest.mark.parametrize("keep", [False, True])
def test_head_and_top_optimizer_fresh_or_kept(keep):
    "Default: a new head and a fresh top-layer optimizer each epoch; remove_head=False / reassign_top_optimizer=False keep them."
    configs = run_configs("deepcluster", DEEPCLUSTER_ROLES, settings={**SMALL, "epochs": 2, "top_momentum": 0.9,
                                                                     "remove_head": not keep, "reassign_top_optimizer": not keep})
    model, plugin, _ = build_deepcluster(configs)
    probe = HeadProbe(plugin)
    trainer = Trainer(model, plugin.train_data, config=configs["train"], plugins=[plugin, probe])
    trainer.fit()
    assert (probe.heads[0] is probe.heads[1]) == keep
    assert probe.optimizer_states == ([0, 2] if keep else [0, 0])        # momentum of weight and bias carried over
    assert len(trainer.history) == 2 and "nmi_prev" in trainer.history[1]


def test_kept_head_clusters_the_features_below_it():
    "remove_head=False (luftmeer's default) keeps training one top layer, but k-means still gets the features below it, not its k logits."
    configs = run_configs("deepcluster", DEEPCLUSTER_ROLES, settings={**SMALL, "epochs": 1, "remove_head": False})
    model, plugin, trainer = build_deepcluster(configs)
    shapes, cluster_rows = [], plugin.cluster_rows
    plugin.cluster_rows = lambda rows, epoch: (shapes.append(rows.shape), cluster_rows(rows, epoch))[1]
    trainer.fit()
    assert plugin.feature_dim != SMALL["k"] and shapes == [(1437, plugin.feature_dim)]


class Images(list):
    "A stand-in dataset: items and `.targets`."
    def __init__(self, targets): super().__init__(range(len(targets))); self.targets = np.asarray(targets)


def test_unlabelled_split_says_no_labels():
    "Labels of -1 (STL-10's unlabeled split): no NMI of 0 but 'no labels'; partly labelled: scored on the labelled samples, counted."
    from lcc_nb.deepcluster_config import DeepClusterConfig
    rows = np.random.default_rng(0).normal(size=(40, 6))
    config = DeepClusterConfig(k=4, pca=False)
    with pytest.warns(UserWarning, match="no labels"):
        _, logs = DeepClusterPlugin(config, Images([-1] * 40), Images([-1] * 40)).cluster_rows(rows, 0)
    assert logs["labelled"] == 0 and "nmi" not in logs and "acc" not in logs
    half = [0, 1] * 10 + [-1] * 20
    with pytest.warns(UserWarning, match="20 labelled samples of 40"):
        labels, logs = DeepClusterPlugin(config, Images(half), Images(half)).cluster_rows(rows, 0)
    assert logs["labelled"] == 20 and logs["nmi"] == pytest.approx(nmi(half[:20], labels[:20]))


def test_pretrained_model_brings_its_own_preprocessing(tmp_path):
    "Pretrained torchvision weights: the features and the training crops get the weights' normalisation and 3-channel input."
    from lcc_nb.models import get_model
    path = tmp_path/"resnet18.pt"
    torch.save(get_model("resnet18", 10).state_dict(), path)
    run = run_deepcluster(**{**SMALL, "model": "resnet18", "pretrained": str(path), "image_size": 32, "train_split": "test",
                             "epochs": 1, "batch_size": 128})
    eval_tf = run.plugin.eval_data.transform
    assert "torchvision" in run.metrics["inputs"] and run.model.conv1.in_channels == 3
    assert any(type(t).__name__ == "Normalize" and tuple(t.mean) == pytest.approx((0.485, 0.456, 0.406)) for t in eval_tf.transforms)
    assert run.plugin.eval_data[0][0].shape == (3, 32, 32) and run.plugin.train_data[0][0].shape == (3, 32, 32)
    plain = build_deepcluster(run_configs("deepcluster", DEEPCLUSTER_ROLES, settings={**SMALL, "epochs": 1}))[1]
    assert plain.inputs == "the dataset's statistics" and plain.eval_data[0][0].shape == (1, 8, 8)


def test_fashion_mnist_recipe_validates_and_runs():
    "The `fashion_mnist` recipe (bench/deepcluster_fashion_mnist.py) builds valid configs and trains, here on digits for one epoch."
    configs = run_configs("deepcluster", DEEPCLUSTER_ROLES, "fashion_mnist")
    assert (configs["data"].dataset, configs["model"].model, configs["config"].k, configs["config"].pca_dim) == ("fashion_mnist", "lcc/small_cnn", 10, 16)
    assert (configs["config"].hflip, configs["config"].min_crop_scale, configs["train"].scheduler) == (False, 0.5, "cosine")
    run = run_deepcluster(recipe="fashion_mnist", dataset="digits", epochs=1, progress=False)
    assert run.results["config"]["train"]["scheduler"] == "cosine" and run.results["config"]["config"]["pca_dim"] == 16
    assert not run.metrics["collapsed"] and run.metrics["clusters_non_empty"] == 10
    assert run.metrics["nmi"] > 0.5                                     # measured 0.713 (untrained 0.630) on digits after one epoch
