"""LLB tests that need whole runs, processes or the CLI: a frozen backbone stays bit-identical, α = 1 is the backbone,
the branch learns, the diversity term raises object-usage entropy, 2-process gloo DDP equals one process, a seed
reproduces a run, the reference's names are accepted, random visual paths are refused unless allowed, and the reference
README command runs offline."""
import json, os, subprocess, sys

import pytest
import torch
from torch.utils.data import TensorDataset

from lcc_nb.core import LccError, list_checkpoints, load_checkpoint
from lcc_nb.data_config import DataConfig
from lcc_nb.llb import TINY_VIT, LLBConfig, LLBModel, LLBPlugin, build_llb_model, llb_datasets, run_llb
from lcc_nb.models import get_model
from lcc_nb.train import TrainConfig, Trainer, fit, launch

VIT_CONFIG = {k: TINY_VIT[k] for k in ("patch_size", "depth", "embed_dim", "num_heads")}
TINY = dict(backbone="timm/vit_tiny_patch16_224", backbone_config=VIT_CONFIG, crop_pct=1.0, target_layer=2, object_size=16,
            num_nvit_layers=2, randaugment=False)
TINY_DATA = DataConfig(image_size=8, in_chans=1, val_fraction=0.1)
TINY_LOOP = dict(batch_size=32, optimizer="adam", lr=3e-3, scheduler="none", progress=False)
LCC_NB = os.path.join(os.path.dirname(sys.executable), "lcc_nb")


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
    def run(): return run_llb(TINY | {"randaugment": True, "allow_random_backbone": True}, data=TINY_DATA, batch_size=64, epochs=1, lr=3e-3, seed=5, opt="adam",
                              data_dir=str(tmp_path/"none"), lr_step=1, progress=False)
    first, second = run(), run()
    assert first.configs["data"].root == str(tmp_path/"none") and first.configs["train"].step_size == 1
    for k, v in first.model.state_dict().items(): assert torch.equal(v, second.model.state_dict()[k]), k
    assert {k: v for k, v in first.metrics.items() if k != "time_s"} == {k: v for k, v in second.metrics.items() if k != "time_s"}


def test_a_bad_method_is_named():
    with pytest.raises(Exception, match="Did you mean"): run_llb(method="mae_in1k", epochs=0)


def test_refusals_name_the_fix(backbone, tmp_path):
    "A random frozen backbone, a re-initialised frozen visual head and eval without weights are refused, each naming the fix."
    path = str(backbone[0])
    with pytest.raises(LccError, match="transfer=False, no nv_weights.*allow_random_backbone=True"):
        run_llb(LLBConfig(**TINY), data=TINY_DATA, **TINY_LOOP, epochs=1)
    with pytest.raises(LccError, match="head has 1000 classes and the dataset 10.*encoder_weight="):
        run_llb(LLBConfig(transfer=True), data=TINY_DATA, epochs=1)          # timm would re-initialise the head: refused before any download
    three = tmp_path/"three.pt"
    torch.save(get_model("timm/vit_tiny_patch16_224", 3, **TINY_VIT).state_dict(), three)
    with pytest.raises(LccError, match="head has 3 classes and the dataset 10"):
        run_llb(LLBConfig(**TINY, transfer=True, encoder_weight=str(three)), data=TINY_DATA, epochs=1)
    with pytest.raises(LccError, match="eval=True evaluates a trained LLB model: give nv_weights="):
        run_llb(LLBConfig(**TINY, transfer=True, encoder_weight=path, eval=True), data=TINY_DATA, **TINY_LOOP)


def test_allow_random_backbone_runs_what_is_refused(tmp_path):
    "The explicit opt-in runs each refused case: a random frozen backbone, a re-initialised head, eval of untrained weights."
    three = tmp_path/"three.pt"
    torch.save(get_model("timm/vit_tiny_patch16_224", 3, **TINY_VIT).state_dict(), three)
    for config in (LLBConfig(**TINY, allow_random_backbone=True),
                   LLBConfig(**TINY, transfer=True, encoder_weight=str(three), allow_random_backbone=True)):
        run = run_llb(config, data=TINY_DATA, **TINY_LOOP, epochs=1)
        assert run.metrics["steps"] > 0 and 0 <= run.metrics["test_acc_visual"] <= 1
    evaluated = run_llb(LLBConfig(**TINY, eval=True, allow_random_backbone=True), data=TINY_DATA, **TINY_LOOP).metrics
    assert evaluated["steps"] == 0 and "test_acc" in evaluated


def test_nv_weights_start_from_an_llb_checkpoint(backbone, tmp_path):
    "nv_weights loads a whole LLB checkpoint (backbone and branch): evaluating it reproduces the run's test metrics."
    config = LLBConfig(**TINY, transfer=True, encoder_weight=str(backbone[0]))
    run = run_llb(config, data=TINY_DATA, **TINY_LOOP, epochs=1, out_dir=str(tmp_path/"run"))
    best = str(list_checkpoints(tmp_path/"run/checkpoints/best")[-1])
    again = run_llb(LLBConfig(**TINY, nv_weights=best, eval=True), data=TINY_DATA, **TINY_LOOP).metrics   # no transfer: the checkpoint has it all
    assert (again["test_acc"], again["test_acc_branch"]) == (run.metrics["test_acc"], run.metrics["test_acc_branch"])


README = ("--amp --seed 123 --save --method timm_augreg_in21k_ft_in1k --encoder ViT --vit_size Base --transfer --freeze --alpha 0.8 "
          "--num_nvit_layers 6 --target_layer 11 --object_size 2048 --dataset ImageNet --batch_size 128 --epochs 70 "
          "--lr_scheduler CosineAnnealingLR --opt Adam").split()   # IlminKang/LLB README, after `torchrun --nproc_per_node=4 train.py`


def test_reference_readme_command_parses():
    "The README's flags as written: --encoder is no abbreviation of --encoder_weight, Base and ImageNet keep their case until the configs."
    from lcc_nb.cli import build_parser, normalise_flags
    from lcc_nb.config import given_settings, run_configs
    from lcc_nb.llb_config import LLB_ROLES
    argv = normalise_flags(["llb", *README])
    args = build_parser(argv).parse_args(argv)
    assert (args.encoder, args.vit_size, args.dataset, args.every_epoch, args.precision, args.scheduler) == ("ViT", "Base", "ImageNet", True, "bf16", "cosine")
    settings = given_settings(args, *LLB_ROLES.values())
    configs = run_configs("llb", LLB_ROLES, "default", settings)
    assert (configs["config"].encoder, configs["config"].vit_size, configs["config"].alpha, configs["train"].seed) == ("vit", "base", 0.8, 123)
    reference = run_configs("llb", LLB_ROLES, "reference")
    for role in LLB_ROLES:   # the README's run and the reference recipe agree on every setting the README gives
        for name in settings:
            if hasattr(reference[role], name) and name != "dataset":
                assert getattr(configs[role], name) == getattr(reference[role], name), name


def _tiny_imagenet(root, per_class:int, split:str):
    "A generated ImageNet-layout folder, <root>/imagenet/<split>/<class>/<image>.png: three classes of 8×8 RGB images."
    from PIL import Image
    g = torch.Generator().manual_seed(len(split))
    for c, colour in enumerate(((200, 40, 40), (40, 200, 40), (40, 40, 200))):
        folder = root/"imagenet"/split/f"n0000000{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            noise = torch.randint(-40, 40, (8, 8, 3), generator=g)
            pixels = (torch.tensor(colour) + noise).clamp(0, 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(folder/f"{i}.png")


def test_reference_readme_command_runs_offline(tmp_path):
    """The README command through `lcc_nb llb`, offline, translated only where it cannot run here:
    - `torchrun --nproc_per_node=4 train.py` → `lcc_nb llb` (one process; `--devices 4` would spawn four);
    - `--dataset ImageNet` kept: a generated 3-class folder in ImageNet's layout, whose path the reference sets in
      utils/general.py → `--data_dir`; its save path (`--save_dir`, default '') → a temporary folder;
    - `--vit_size Base` kept, but the ViT-B/16 at 224 px is replaced by a tiny ViT built from config (`--backbone`,
      `--backbone_config`, 8×8 images) with 12 blocks, so `--target_layer 11` and `--num_nvit_layers 6` run as written;
    - `--transfer` would download timm's augreg weights → `--encoder_weight`, a state dict of the tiny ViT (3-class head);
    - `--epochs 70` → `--epochs 1`; `--no-progress` keeps the log short."""
    _tiny_imagenet(tmp_path, 50, "train"); _tiny_imagenet(tmp_path, 10, "val")
    torch.manual_seed(0)
    weights = tmp_path/"vit.pt"
    vit = dict(patch_size=4, depth=12, embed_dim=16, num_heads=2)
    torch.save(get_model("timm/vit_tiny_patch16_224", 3, image_size=8, **vit).state_dict(), weights)
    translated = [a if a != "70" else "1" for a in README] + [
        "--backbone", "timm/vit_tiny_patch16_224", *[x for k, v in vit.items() for x in ("--backbone_config", f"{k}={v}")],
        "--image_size", "8", "--encoder_weight", str(weights), "--data_dir", str(tmp_path), "--save_dir", str(tmp_path/"out"), "--no-progress"]
    proc = subprocess.run([LCC_NB, "llb", *translated], capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path/"out/results.json").read_text())
    config, train = results["config"]["config"], results["config"]["train"]
    assert (config["alpha"], config["object_size"], config["target_layer"], config["num_nvit_layers"], config["vit_size"]) == (0.8, 2048, 11, 6, "base")
    assert (train["seed"], train["batch_size"], train["optimizer"], train["scheduler"], train["precision"]) == (123, 128, "adam", "cosine", "bf16")
    assert 0 <= results["test"]["test_acc"] <= 1 and list_checkpoints(tmp_path/"out/checkpoints")


def test_devices_spawns_ddp_processes(backbone):
    "devices=2 runs LLB in two gloo processes (the reference's torchrun --nproc_per_node): each takes half of every epoch."
    config = LLBConfig(**TINY, transfer=True, encoder_weight=str(backbone[0]))
    train, _, _ = llb_datasets(config, TINY_DATA)
    two = run_llb(config, data=TINY_DATA, **TINY_LOOP, epochs=1, drop_last=True, devices=2).metrics
    assert two["steps"] == -(-len(train) // 2) // 32 and two["test_acc_visual"] == backbone[1]


def test_inaturalist2018_preset_reads_the_released_annotations(tmp_path):
    "inaturalist2018 (the reference's --dataset) reads <root>/inaturalist2018/{train2018,val2018}.json; split test is val2018."
    from PIL import Image
    from lcc_nb.data import get_dataset
    folder = tmp_path/"inaturalist2018"
    for split, n in (("train2018", 4), ("val2018", 2)):
        (folder/split).mkdir(parents=True)
        images = [{"id": i, "file_name": f"{split}/{i}.jpg"} for i in range(n)]
        for im in images: Image.new("RGB", (6, 5), (im["id"] * 40, 0, 0)).save(folder/im["file_name"])
        annotations = [{"image_id": i, "category_id": i % 3} for i in range(n)]
        categories = [{"id": c, "name": f"species {c}"} for c in range(3)]
        (folder/f"{split}.json").write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    test = get_dataset("inaturalist2018", "test", root=tmp_path)
    assert (len(test), list(test.targets), test.classes[2]) == (2, [0, 1], "species 2")
    assert get_dataset("inaturalist2018", "train", root=tmp_path)[3][0].shape == (3, 224, 224)   # mixed sizes: resized like ImageNet's
    with pytest.raises(LccError, match="inaturalist2018"): get_dataset("inaturalist2018", "test", root=tmp_path/"none")
