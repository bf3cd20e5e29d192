"""An LCC epoch vs a plain epoch, side by side in one process, with the time of each LCC step.

    python bench/lcc.py                                   # digits, lcc/small_cnn, fc1
    python bench/lcc.py --submodules features,fc1 --loss randomized --epochs 5

Three runs of the same model and data with the one training loop: no plug-in (plain), LCCPlugin(weight=0) (clustering
and logging only: the CE-only baseline) and LCCPlugin(weight=1) (clustering + the LCC loss). Every epoch of the LCC
runs is an LCC epoch. Printed: median epoch time of each run and its ratio to the plain epoch, then the median time of
each LCC step (latent extraction, k-NN graph, communities, matching, targets) and the loss overhead of the training steps.
"""
import argparse, statistics, time

import torch

from lcc_nb.data import get_dataset
from lcc_nb.lcc import LCCPlugin
from lcc_nb.models import get_model
from lcc_nb.train import Plugin, fit


class EpochTimer(Plugin):
    "Wall time of each epoch's training part (from on_epoch_start to the end of the last step)."
    def __init__(self): self.times, self._start = [], None
    def on_epoch_start(self, trainer):
        if trainer.device.type == "cuda": torch.cuda.synchronize()
        self._start = time.perf_counter()
    def on_epoch_end(self, trainer, logs):
        if trainer.device.type == "cuda": torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._start)


def run(args, lcc):
    "Epoch times, and the LCC plug-in (or None), of one run."
    torch.manual_seed(0)
    model = get_model(args.model, 10, **({"batchnorm": False} if args.model == "lcc/small_cnn" else {}))
    timer = EpochTimer()
    plugins = [timer] + ([lcc] if lcc is not None else [])  # the timer starts before LCC's epoch-start work
    fit(model, get_dataset(args.dataset, "train"), plugins=plugins, epochs=args.epochs, batch_size=args.batch_size,
        optimizer="adam", lr=3e-3, device=args.device, progress=False)
    return timer.times, lcc


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="lcc/small_cnn")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--submodules", default="fc1")
    p.add_argument("--loss", default="exact", choices=("exact", "randomized"))
    p.add_argument("--clustering", default="louvain")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    runs = {"plain": run(args, None),
            "lcc weight=0": run(args, LCCPlugin(args.submodules, weight=0.0, loss=args.loss, clustering=args.clustering)),
            "lcc weight=1": run(args, LCCPlugin(args.submodules, weight=1.0, loss=args.loss, clustering=args.clustering))}
    plain = statistics.median(runs["plain"][0])
    print(f"{args.model} on {args.dataset}, submodules {args.submodules}, {args.loss} loss, {args.clustering}, "
          f"median of {args.epochs} epochs")
    print(f"{'run':<14}{'epoch s':>10}{'× plain':>10}")
    for name, (times, _) in runs.items():
        print(f"{name:<14}{statistics.median(times):>10.3f}{statistics.median(times) / plain:>10.2f}")
    history = runs["lcc weight=1"][1].history
    steps = [k for k in history[0] if k.startswith("time_") or "/time_" in k]
    print("\nLCC steps (weight=1 run), median seconds per LCC epoch:")
    for k in steps: print(f"  {k:<40}{statistics.median(h[k] for h in history):>8.3f}")
    clustering = sum(statistics.median(h[k] for h in history) for k in steps)
    loss_part = statistics.median(runs["lcc weight=1"][0]) - statistics.median(runs["lcc weight=0"][0])
    print(f"  {'all epoch-start steps':<40}{clustering:>8.3f}")
    print(f"  {'loss in the training steps (w=1 − w=0)':<40}{loss_part:>8.3f}")


if __name__ == "__main__":
    main()
