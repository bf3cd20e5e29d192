"Tests of Latent Cluster Correction that do not fit in nbs/10_lcc.ipynb: the headline LCC-vs-CE comparison, run_lcc, resume and DDP."
import json, os

import numpy as np
import pytest
import torch

from lcc_nb.core import list_checkpoints
from lcc_nb.data import get_dataset
from lcc_nb.distributed import launch
from lcc_nb.lcc import LCCPlugin, cluster_latents, correction_targets, lcc_distances, lcc_loss, run_lcc
from lcc_nb.metrics import match_clusters_to_classes, misclustered_mask
from lcc_nb.models import get_model
from lcc_nb.train import Trainer, TrainConfig, fit


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


TINY = dict(model_options={"width": 8, "hidden": 32, "batchnorm": False}, batch_size=128, optimizer="adam", lr=3e-3,
            progress=False)


def test_run_lcc_writes_checkpoints_logs_results(tmp_path):
    out = tmp_path/"run"
    run = run_lcc(lcc_submodules="fc1", lcc_loss="randomized", lcc_ccspc=20, epochs=2, lcc_warmup=1, seed=1, out_dir=str(out),
                  **{**TINY, "model_options": {}})   # the default small_cnn (BatchNorm on) learns fast
    results = json.loads((out/"results.json").read_text())
    assert results["method"]["name"] == "lcc" and results["config"]["config"]["lcc_loss"] == "randomized"
    assert results["config"]["config"]["lcc_samples_per_community"] == 20 and results["config"]["train"]["seed"] == 1
    assert results["test"]["test_acc"] > 0.3 and results["time_s"] > 0
    assert [h["epoch"] for h in results["method"]["history"]] == [1]
    assert results["test"] == run.results["test"]
    assert os.path.exists(run.train.best_checkpoint) and list_checkpoints(out/"checkpoints")
    header = (out/"logs"/"epochs.csv").read_text().splitlines()[0]
    assert "lcc/fc1/misclustered_fraction" in header and "train_lcc_loss" in header


def test_run_lcc_same_seed_same_weights_and_metrics():
    "Seeded before anything is built: two runs with the same seed agree exactly (the CLI runs this same function)."
    runs = [run_lcc(lcc_submodules="fc1", epochs=2, seed=3, val_fraction=0.2, **TINY) for _ in range(2)]
    for name, weights in runs[0].model.state_dict().items(): assert torch.equal(weights, runs[1].model.state_dict()[name]), name
    assert runs[0].train.test_metrics == runs[1].train.test_metrics
    assert runs[0].plugin.history[-1]["fc1/nmi"] == runs[1].plugin.history[-1]["fc1/nmi"]
    assert [h["val_acc"] for h in runs[0].train.history] == [h["val_acc"] for h in runs[1].train.history]


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

def test_pretrained_weights_bring_their_own_preprocessing(tmp_path):
    "A pretrained torchvision model keeps its 3-channel stem and gets its weights' normalisation on 1-channel digits."
    from lcc_nb.models import get_model
    path = tmp_path/"resnet18.pt"
    torch.save(get_model("resnet18", 10).state_dict(), path)
    run = run_lcc(model="resnet18", pretrained=str(path), image_size=32, epochs=1, batch_size=256, lcc_submodules="",
                  test_split="", progress=False, out_dir=str(tmp_path/"run"))
    inputs = run.results["method"]["inputs"]
    assert "Normalize(mean=(0.485, 0.456, 0.406)" in inputs and "CenterCrop(size=(32, 32))" in inputs, inputs
    assert run.model.conv1.in_channels == 3 and run.results["config"]["data"]["preprocessing"] == "auto"
    plain = run_lcc(model="lcc/small_cnn", epochs=0, lcc_submodules="", test_split="", progress=False)
    assert plain.results["method"]["inputs"] == "the dataset's tensors"   # random init: the dataset's own tensors


# The README of altaris/lcc fine-tunes microsoft/resnet-18 on CIFAR-100 with this command (`uv run python -m lcc train ...`):
README_COMMAND = ("microsoft/resnet-18 PRESET:cifar100 output_dir --batch-size 256 --head-name classifier.1 --logit-key logits "
                  "--lcc-submodules resnet.encoder.stages.3 --lcc-warmup 1 --lcc-weight 0.01 --seed 123").split()


def tiny_hub_resnet(folder):
    "A stand-in for the hub's microsoft/resnet-18 saved with save_pretrained: a ResNet of the same family and submodule names"
    " (4 stages, classifier.1 with 1000 outputs), random weights, and the ConvNeXt image processor the hub model has, at 32 px."
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification
    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1], layer_type="basic", num_labels=1000)
    ResNetForImageClassification(config).save_pretrained(folder)
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875).save_pretrained(folder)
    return str(folder)


def test_reference_readme_command_runs(tmp_path, capsys):
    """The README's command through `lcc_nb train`, translated only where it must be to run offline and short:
    `uv run python -m lcc train` → `lcc_nb train --recipe reference` (the recipe holds the original's settings);
    `microsoft/resnet-18` → a local directory with a tiny ResNet of the same family (`tiny_hub_resnet`), which the
    reference recipe's pretrained=True loads as it would the hub's; `PRESET:cifar100` → `PRESET:digits` (the same 80/20
    hold-out of the training split, and a test split); `output_dir` → a temporary folder; `--max-epochs 2` added."""
    from lcc_nb.cli import main
    translate = {"microsoft/resnet-18": tiny_hub_resnet(tmp_path/"resnet-18"), "PRESET:cifar100": "PRESET:digits",
                 "output_dir": str(tmp_path/"out")}
    argv = ["train", "--recipe", "reference", *[translate.get(a, a) for a in README_COMMAND], "--max-epochs", "2", "--no-progress"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    results = json.loads((tmp_path/"out"/"results.json").read_text())
    data, train, lcc, model = (results["config"][role] for role in ("data", "train", "config", "model"))
    assert (data["dataset"], data["train_split"], data["val_split"], data["test_split"]) == ("digits", "train[:80%]", "train[80%:]", "test")
    assert (train["lr"], train["grad_clip"], train["shuffle"], train["test_weights"], train["seed"], train["epochs"]) == (0.1, 1.0, False, "last", 123, 2)
    assert (lcc["lcc_submodules"], lcc["lcc_weight"], lcc["lcc_loss_weight_epochs"]) == (["resnet.encoder.stages.3"], 0.01, "lcc")
    assert model["pretrained"] is True and model["head_name"] == "classifier.1"
    assert "Normalize" in results["method"]["inputs"] and "CenterCrop(size=(32, 32))" in results["method"]["inputs"]   # the processor's
    assert [h["epoch"] for h in results["method"]["history"]] == [1]                                              # warm-up of 1 epoch
    assert 0 <= results["method"]["history"][0]["resnet.encoder.stages.3/misclustered_fraction"] <= 1
    assert summary["test"]["test_acc"] == results["test"]["test_acc"] and "val_acc" in results["final"]


def test_download_setting_reaches_get_dataset(monkeypatch):
    import lcc_nb.lcc as lcc
    seen = []
    def recording(name, split, root, download, *args, **kwargs):
        seen.append((split, download)); return get_dataset(name, split, root, False, *args, **kwargs)
    monkeypatch.setattr(lcc, "get_dataset", recording)
    run_lcc(epochs=0, download=True, test_split="", progress=False)
    assert seen == [("train", True)]
