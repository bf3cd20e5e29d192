"""Input-pipeline throughput: images/s of lcc_nb's feature extraction and training loop against bare PyTorch loops doing
the same work, measured side by side.

Run: `OMP_NUM_THREADS=1 .venv/bin/python bench/throughput.py [--n 2048] [--rounds 3] [--dataset fashion_mnist]`
(the dataset's files must be under the data root: `lcc_nb data fetch fashion_mnist`).

Workload: the first `n` images of the preset's training split (28×28 grey for Fashion-MNIST), `lcc/small_cnn`
(batch norm, width 32, 10 classes), one thread. Every contender runs once per round, in the same order each round
(alternating, so machine load hits all alike); the best of `rounds` is reported.

- extraction (forward only, no gradient, batches of 256):
  `lcc_nb.latents.extract_latents` of `fc1` on the preset's dataset, vs a bare `DataLoader` over the same dataset
  with `model(x)` (same images, same per-image decoding), vs the same bare loop over the images already held as one
  float tensor (no input pipeline at all: the bound);
- training (one epoch, SGD, batches of 64, shuffled): `lcc_nb.train.Trainer` vs a bare DataLoader + SGD loop over the
  same dataset vs the bare loop over held tensors;
- data only: iterating the `DataLoader` of the preset's dataset without a model.
"PIL items" is the same dataset with `transform=to_tensor`, i.e. each item decoded through PIL, as every preset did
before in-memory presets (digits, shapes, MNIST family, CIFAR) returned their default tensors straight from the
held uint8 pixels.
Prints images/s and the ratios; the "pipeline share" is the fraction of the loop's time not spent when the images are
already tensors.
"""
import argparse, os, time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from lcc_nb.core import set_seed
from lcc_nb.data import Subset, get_dataset, to_tensor
from lcc_nb.latents import extract_latents
from lcc_nb.models import get_model
from lcc_nb.train import TrainConfig, Trainer

EXTRACT_BATCH, TRAIN_BATCH = 256, 64


def small_cnn(seed=0):
    set_seed(seed)
    return get_model("lcc/small_cnn", 10, in_chans=1, image_size=28)


def held(ds):
    "The images of `ds` decoded once into one float tensor (what a bare loop over tensors reads)."
    return TensorDataset(torch.stack([ds[i][0] for i in range(len(ds))]), torch.as_tensor(ds.targets))


@torch.no_grad()
def bare_forward(model, ds):
    model.eval()
    for x, _ in DataLoader(ds, batch_size=EXTRACT_BATCH, num_workers=0): model(x)


def lcc_extract(model, ds): extract_latents(model, ds, ["fc1"], batch_size=EXTRACT_BATCH, progress=False)


def bare_train(model, ds):
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for x, y in DataLoader(ds, batch_size=TRAIN_BATCH, shuffle=True, num_workers=0):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()


def lcc_train(model, ds):
    Trainer(model, ds, config=TrainConfig(epochs=1, batch_size=TRAIN_BATCH, optimizer="sgd", lr=0.01, scheduler="none",
                                          progress=False)).fit()


def data_only(_, ds):
    for _ in DataLoader(ds, batch_size=EXTRACT_BATCH, num_workers=0): pass


def best_rates(contenders, n, rounds):
    "{name: best images/s over `rounds`}; each round runs every contender once, in order, on a fresh model."
    best = {name: 0.0 for name in contenders}
    for r in range(rounds):
        for name, (run, ds) in contenders.items():
            model = small_cnn(r)
            start = time.perf_counter(); run(model, ds); seconds = time.perf_counter() - start
            best[name] = max(best[name], n / seconds)
    return best


def report(title, rates, lcc, bare, bound):
    print(title)
    for name, rate in rates.items(): print(f"  {name:<46} {rate:9.0f} images/s")
    before = next((name for name in rates if "PIL items" in name), None)
    if before: print(f"  lcc_nb, default items / PIL items: {rates[lcc] / rates[before]:.2f}×")
    print(f"  lcc_nb / bare loop on the same dataset: {rates[lcc] / rates[bare]:.2f}×   "
          f"lcc_nb / bare loop on held tensors: {rates[lcc] / rates[bound]:.2f}×   "
          f"pipeline share of the bare loop: {1 - rates[bare] / rates[bound]:.0%}")


def main(dataset, n, rounds, root=None):
    ds = Subset(get_dataset(dataset, "train", root=root), range(n))
    pil = Subset(get_dataset(dataset, "train", root=root, transform=to_tensor), range(n))   # the PIL path (before the fix)
    tensors = held(ds)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU; {dataset} train[:{n}] "
          f"({tuple(ds[0][0].shape)} per image), lcc/small_cnn; best of {rounds} alternating rounds; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"default item path: {'held uint8 pixels → tensor' if ds.dataset.pixels is not None else 'PIL → to_tensor'}")
    rates = best_rates({"data only: DataLoader, default items": (data_only, ds),
                        "data only: DataLoader, PIL → to_tensor items": (data_only, pil),
                        "lcc_nb extract_latents (PIL items)": (lcc_extract, pil),
                        "lcc_nb extract_latents (dataset)": (lcc_extract, ds),
                        "bare forward loop (same dataset)": (bare_forward, ds),
                        "bare forward loop (held tensors)": (bare_forward, tensors)}, n, rounds)
    report(f"extraction, forward only, batches of {EXTRACT_BATCH}", rates, "lcc_nb extract_latents (dataset)",
           "bare forward loop (same dataset)", "bare forward loop (held tensors)")
    rates = best_rates({"lcc_nb Trainer, 1 epoch (PIL items)": (lcc_train, pil),
                        "lcc_nb Trainer, 1 epoch (dataset)": (lcc_train, ds),
                        "bare SGD loop (same dataset)": (bare_train, ds),
                        "bare SGD loop (held tensors)": (bare_train, tensors)}, n, rounds)
    report(f"training, one epoch, SGD, batches of {TRAIN_BATCH}", rates, "lcc_nb Trainer, 1 epoch (dataset)",
           "bare SGD loop (same dataset)", "bare SGD loop (held tensors)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--root", default=None)
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    main(args.dataset, args.n, args.rounds, args.root)
