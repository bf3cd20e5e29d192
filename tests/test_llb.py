"""LLB tests that need whole runs, processes or the CLI: a frozen backbone stays bit-identical, α = 1 is the backbone,
the branch learns, the diversity term raises object-usage entropy, 2-process gloo DDP equals one process, a seed
reproduces a run, the reference's names are accepted."""
import json

import pytest
import torch
from torch.utils.data import TensorDataset

from lcc_nb.core import list_checkpoints, load_checkpoint
from lcc_nb.data_config import DataConfig
from lcc_nb.llb import TINY_VIT, LLBConfig, LLBModel, LLBPlugin, build_llb_model, llb_datasets, run_llb
from lcc_nb.models import get_model
from lcc_nb.train import TrainConfig, Trainer, fit, launch

VIT_CONFIG = {k: TINY_VIT[k] for k in ("patch_size", "depth", "embed_dim", "num_heads")}
TINY = dict(backbone="timm/vit_tiny_patch16_224", backbone_config=VIT_CONFIG, crop_pct=1.0, target_layer=2, object_size=16,
            num_nvit_layers=2, randaugment=False)
TINY_DATA = DataConfig(image_size=8, in_chans=1, val_fraction=0.1)
TINY_LOOP = dict(batch_size=32, optimizer="adam", lr=3e-3, scheduler="none", progress=False)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    "A tiny ViT trained on digits (through the LLB datasets' transforms), saved as a state dict; and its test accuracy."
    torch.set_num_threads(1)
    train, _, test = llb_datasets(LLBConfig(**TINY), TINY_DATA)
    torch.manual_seed(0)
    model = get_model("timm/vit_tiny_patch16_224", 10, **TINY_VIT)
    fit(model, train, epochs=5, batch_size=32, optimizer="adamw", lr=3e-3, scheduler="cosine", warmup_steps=20, progress=False)
    path = tmp_path_factory.mktemp("backbone")/"vit.pt"
    torch.save(model.state_dict(), path)
    accuracy = Trainer(model, train, config=TrainConfig(progress=False)).evaluate(test, "test")["test_acc"]
    return path, accuracy, test


def test_llb_keeps_the_backbone_and_the_branch_learns(backbone, tmp_path):
    path, backbone_acc, test = backbone
    config = LLBConfig(**TINY, transfer=True, encoder_weight=str(path))
    out = tmp_path/"run"
    metrics = run_llb(config, data=TINY_DATA, **TINY_LOOP, epochs=4, out_dir=str(out)).metrics
    assert metrics["test_acc_branch"] > 0.5                                   # chance: 0.1
    assert metrics["test_acc_visual"] == backbone_acc

    last = load_checkpoint(list_checkpoints(out/"checkpoints")[-1])
    original = torch.load(path)
    for k, v in original.items(): assert torch.equal(last["model"]["backbone." + k], v), k
    model = build_llb_model(config, TINY_DATA, 10).eval()
    model.load_state_dict(last["model"])
    fresh = get_model("timm/vit_tiny_patch16_224", 10, pretrained=str(path), **TINY_VIT).eval()
    x = torch.stack([test[i][0] for i in range(100)])
    with torch.no_grad():
        model(x)
        assert torch.equal(model.last.logits_visual, fresh(x))                  # logits_v bit-identical

    epochs = [json.loads(line) for line in (out/"logs/epochs.jsonl").read_text().splitlines()]
    assert len(epochs) == 4
    for row in epochs:
        assert 0 < row["train_usage_entropy"] <= torch.log(torch.tensor(16.0)).item() + 1e-6
        assert 1 / 16 <= row["train_max_prob"] <= 1 and "val_acc_branch" in row
    assert "usage_entropy,max_prob" in (out/"logs/steps.csv").read_text().splitlines()[0]

    best = list_checkpoints(out/"checkpoints/best")[-1]
    alpha_one = run_llb(config, data=TINY_DATA, **TINY_LOOP, alpha=1.0, eval=True, resume=str(best)).metrics
    assert alpha_one["test_acc"] == backbone_acc and alpha_one["steps"] == 0


def test_diversity_term_raises_usage_entropy(backbone):
    path = str(backbone[0])
    runs = {weight: run_llb(LLBConfig(**TINY, transfer=True, encoder_weight=path, diversity_weight=weight), data=TINY_DATA,
                            **TINY_LOOP, epochs=2).metrics for weight in (0.5, 0.0)}
    print({w: (round(m["test_usage_entropy"], 3), round(m["test_max_prob"], 3)) for w, m in runs.items()})
    assert runs[0.5]["test_usage_entropy"] > runs[0.0]["test_usage_entropy"] + 0.05


def _fit_llb(batch_size):
    "The same tiny LLB run whatever the world size (global batch 32): Adam, the diversity term, a step schedule."
    torch.manual_seed(0)
    model = LLBModel(get_model("timm/vit_tiny_patch16_224", 10, **TINY_VIT), 10, target_layer=2, object_size=8, num_nvit_layers=2)
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(128, 1, 8, 8, generator=g), torch.randint(0, 10, (128,), generator=g))
    cfg = TrainConfig(epochs=2, batch_size=batch_size, optimizer="adam", lr=1e-3, scheduler="step", scheduler_interval="epoch",
                      step_size=1, gamma=0.5, monitor="val_acc", progress=False)
    result = Trainer(model, data, val_data=data, config=cfg, plugins=[LLBPlugin(0.5)]).fit()
    return {k: v.detach().clone() for k, v in model.branch.state_dict().items()}, result.history


def test_two_gloo_processes_match_one_process():
    torch.set_num_threads(1)
    single_weights, single_history = _fit_llb(32)
    ddp_weights, ddp_history = launch(_fit_llb, 16, nprocs=2, backend="gloo", start_method="fork")   # fork: no re-import
    for k in single_weights: torch.testing.assert_close(ddp_weights[k], single_weights[k], rtol=1e-4, atol=1e-5)
    for a, b in zip(single_history, ddp_history, strict=True):
        assert a["step"] == b["step"] and a["lr"] == b["lr"]
        for key in ("train_loss", "train_usage_entropy", "train_max_prob", "val_loss", "val_usage_entropy"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), key
        assert (a["val_acc"], a["val_acc_branch"]) == pytest.approx((b["val_acc"], b["val_acc_branch"]))


def test_same_seed_gives_identical_weights_and_metrics(tmp_path):
    "Two runs with RandAugment, the recipe's Adam + weight decay + StepLR, the reference's spellings (opt, data_dir, lr_step)."
    def run(): return run_llb(TINY | {"randaugment": True}, data=TINY_DATA, batch_size=64, epochs=1, lr=3e-3, seed=5, opt="adam",
                              data_dir=str(tmp_path/"none"), lr_step=1, progress=False)
    first, second = run(), run()
    assert first.configs["data"].root == str(tmp_path/"none") and first.configs["train"].step_size == 1
    for k, v in first.model.state_dict().items(): assert torch.equal(v, second.model.state_dict()[k]), k
    assert {k: v for k, v in first.metrics.items() if k != "time_s"} == {k: v for k, v in second.metrics.items() if k != "time_s"}


def test_a_bad_method_is_named():
    with pytest.raises(Exception, match="Did you mean"): run_llb(method="mae_in1k", epochs=0)
