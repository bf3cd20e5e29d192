"""Vectorised (vmap) vs sequential (one chain at a time) SGLD chains for the LLC, side by side in one process.

Same small MLP, same data, same hyper-parameters and same seeds for both samplers (so the chains themselves are the
same up to float rounding); devinterp is run too when it is installed. Prints wall times, the speed-up and both
estimates. Usage: python bench/llc.py [--chains 8] [--draws 200] [--repeats 3] [--device cpu] [--widths 32 128]
"""
import argparse, importlib.util, os, statistics, time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lcc_nb.llc import estimate_llc


def mlp_and_loader(width: int, n: int = 1024, dim: int = 64, classes: int = 10, batch_size: int = 32, seed: int = 0):
    "A 2-hidden-layer MLP trained briefly on a random teacher's labels, and a minibatch loader."
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    y = (x @ torch.randn(dim, classes, generator=g)).argmax(1)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, classes))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(200):
        opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()
    return model, DataLoader(TensorDataset(x, y), batch_size=batch_size)


def timed(fn):
    "Wall and CPU seconds of one call, and its result (CPU time is the fairer measure on a shared machine)."
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chains", type=int, default=8); p.add_argument("--draws", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3); p.add_argument("--device", default="cpu")
    p.add_argument("--widths", type=int, nargs="+", default=[16, 32, 128])
    args = p.parse_args()
    print(f"torch {torch.__version__}, device {args.device}, torch threads {torch.get_num_threads()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, {args.chains} chains × {args.draws} draws, batch 32")
    has_devinterp = importlib.util.find_spec("devinterp") is not None
    print("devinterp:", "installed (run separately: its API differs across versions)" if has_devinterp else "not installed — not compared")
    header = (f"{'MLP width':>9} {'params':>7} | {'vec wall s':>10} {'seq wall s':>10} {'speed-up':>8} | {'vec CPU s':>9} "
              f"{'seq CPU s':>9} {'speed-up':>8} | {'LLC vectorised':>15} {'LLC sequential':>15} {'max|Δ chain|':>12}")
    print(header); print("-" * len(header))
    for width in args.widths:
        model, loader = mlp_and_loader(width)
        settings = dict(loss_fn=F.cross_entropy, epsilon=1e-4, gamma=100.0, num_chains=args.chains, num_draws=args.draws,
                        seed=0, device=args.device)
        estimate_llc(model, loader, **(settings | {"num_draws": 5}))  # warm-up (allocator, lazy imports)
        runs = {True: [], False: []}
        for _ in range(args.repeats):  # interleaved, so both samplers see the same machine load
            for vectorize in (True, False):
                runs[vectorize].append(timed(lambda: estimate_llc(model, loader, vectorize=vectorize, **settings)))
        (vec_wall, vec_cpu), (seq_wall, seq_cpu) = ([statistics.median(r[i] for r in runs[v]) for i in (0, 1)] for v in (True, False))
        vec, seq = runs[True][-1][2], runs[False][-1][2]
        params = sum(p.numel() for p in model.parameters())
        diff = float(abs(vec.per_chain - seq.per_chain).max())
        print(f"{width:>9} {params:>7} | {vec_wall:>10.2f} {seq_wall:>10.2f} {seq_wall / vec_wall:>7.1f}× | {vec_cpu:>9.2f} "
              f"{seq_cpu:>9.2f} {seq_cpu / vec_cpu:>7.1f}× | {vec.mean:>7.3f} ± {vec.std:<5.3f} {seq.mean:>7.3f} ± {seq.std:<5.3f} {diff:>12.1e}")
    print("speed-up = sequential / vectorised time (medians of interleaved repeats); the two samplers share every "
          "chain's batch order and noise, so their estimates agree to float rounding, not merely within noise.")


if __name__ == "__main__":
    main()
