"""Epoch time of lcc_nb's training loop vs a bare PyTorch loop on the same model and data, measured side by side.

Run: `OMP_NUM_THREADS=1 .venv/bin/python bench/train.py [--rounds 8]`. Each round trains the same model both ways
for a few epochs (whole runs, set-up included), alternating so that machine load hits both alike. Prints per-epoch
wall and process-CPU times (fastest round; CPU time is the robust figure on a shared machine) and the overhead ratio
(target: the loop costs at most 5% more than the bare loop).
"""
import argparse, statistics, time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from lcc_nb.data import get_dataset
from lcc_nb.testing import TinyCNN
from lcc_nb.train import TrainConfig, Trainer


def digits_tensors():
    "The digits train split as pre-built tensors, so data loading does not hide the loop's own cost."
    ds = get_dataset("digits", "train")
    return TensorDataset(torch.stack([ds[i][0] for i in range(len(ds))]), torch.as_tensor(ds.targets))


def synthetic_images(n=1024, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g))


def bare_run(model, ds, batch_size, epochs, lr):
    "The plain PyTorch loop: shuffled DataLoader, SGD with momentum, cosine schedule stepped per batch."
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * len(loader))
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward(); opt.step(); sched.step()


def loop_run(model, ds, batch_size, epochs, lr):
    "The same training through lcc_nb.train.Trainer (no validation, no files, no progress bar)."
    Trainer(model, ds, config=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, scheduler="cosine", progress=False)).fit()


def timed(run, *args):
    wall, cpu = time.perf_counter(), time.process_time()
    run(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def compare(name, make_model, ds, batch_size, rounds, epochs=3, lr=0.05):
    "Alternate whole runs of both loops; report per-epoch times of the fastest round and the median paired overhead."
    bare, loop = [], []
    for r in range(rounds):
        torch.manual_seed(r); bare.append(timed(bare_run, make_model(), ds, batch_size, epochs, lr))
        torch.manual_seed(r); loop.append(timed(loop_run, make_model(), ds, batch_size, epochs, lr))
    steps = -(-len(ds) // batch_size)
    print(name)
    for i, clock in enumerate(("wall", "cpu")):
        b, l = min(t[i] for t in bare) / epochs, min(t[i] for t in loop) / epochs
        paired = statistics.median(lt[i] / bt[i] for bt, lt in zip(bare, loop))
        print(f"  {clock:>4}: bare {b*1e3:8.1f} ms/epoch   lcc_nb loop {l*1e3:8.1f} ms/epoch   overhead {100*(l/b-1):+5.1f}% "
              f"({(l-b)/steps*1e6:+5.0f} µs/step, {steps} steps/epoch)   median paired overhead {100*(paired-1):+5.1f}%")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU; {args.rounds} alternating rounds of 3-epoch runs")
    compare("digits 8x8 (1437 samples), TinyCNN(width 16), batch 64", lambda: TinyCNN(1, 10), digits_tensors(), 64, args.rounds)
    compare("random 3x32x32 (1024 samples), TinyCNN(width 32), batch 128", lambda: TinyCNN(3, 10, width=32), synthetic_images(), 128, args.rounds)
