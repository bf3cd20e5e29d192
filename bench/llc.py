"""lcc_nb's LLC estimator against devinterp 1.3.2, side by side on the same model, data and hyper-parameters.

devinterp runs in its own virtual environment (DEVINTERP_PYTHON, default /tmp/devinterp_venv/bin/python) in a child
process that times only its own `estimate_learning_coeff_with_summary` call; lcc_nb runs in this process. The runs
alternate (devinterp, lcc_nb, devinterp, ...) and the best of `--repeats` of each is compared. The default work is
devinterp's kind: an MLP 64-64-10 trained on scikit-learn's digits, 8 chains x 500 draws, minibatches of 64,
epsilon 1e-4, gamma 100, nbeta = m / ln m, train mode, and on both sides the same initial loss: the exact mean over
the training set (devinterp's default, the mean of its first 8 random batches, would add a noise common to all its
chains, nbeta x its error, as large as the difference between two estimates), and full minibatches only
(drop_last: lcc_nb's chains never take a partial batch; devinterp's would take the 1797 % 64 = 5 left-over samples
as a batch every 29 steps).

Prints: both times and their ratio (target >= 3x), both estimates and whether they agree within 2 sigma. Repeat r
uses seed r on both sides and the chains of all repeats are pooled (sigma: the standard error of each pooled mean):
one seed's 8-chain mean spreads by ~0.07 between seeds here, so a one-seed comparison disagrees by chance (our seed 0
gives 0.67, the mean over seeds 0-9 is 0.806, devinterp's 0.796); and lcc_nb's sampler time per SGLD step against its
floor, one batched forward + backward of all chains on one minibatch (target <= 1.3x): against the floor measured
alone (alternating blocks, best of 5) and against the floor's own calls timed inside the sampler (in situ: both sides
see the same machine load, the steadier number on a shared machine); on a CPU the clock is this process's CPU time,
on CUDA wall time with synchronisation. When devinterp cannot be run the comparison is skipped
with the reason and the floor ratio is still printed.

Make the devinterp environment (it shares this venv's torch through a .pth file, so both sides run the same torch):
    python3 -m venv /tmp/devinterp_venv
    echo "$(.venv/bin/python -c 'import site; print(site.getsitepackages()[0])')" \
        > /tmp/devinterp_venv/lib/python3.11/site-packages/main_venv.pth
    /tmp/devinterp_venv/bin/pip install --no-deps devinterp==1.3.2 einops
Usage: OMP_NUM_THREADS=1 python bench/llc.py [--chains 8] [--draws 500] [--repeats 3] [--device cpu] [--profile]
(--profile: also the time per step of each part of the sampler beyond the floor, each timed alone.)
"""
import argparse, json, math, os, subprocess, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lcc_nb.llc import dataset_loss, default_nbeta, estimate_llc
from lcc_nb import llc_estimator as estimator
from lcc_nb.llc_config import SGLDConfig
from lcc_nb.llc_estimator import ChainBatches, NoiseStreams, _all_finite, _chain_seeds, _fixed_tensors, _Flat, _sample, _Step, _VmapEngine

DEVINTERP_RUN = r'''
import json, sys, time
import torch, torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from devinterp.optim.sgld import SGLD
from devinterp.slt.sampler import estimate_learning_coeff_with_summary
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
data = torch.load(args["data"])
model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
model.load_state_dict(data["model"])
loader = DataLoader(TensorDataset(data["x"], data["y"]), batch_size=args["batch_size"], shuffle=True, drop_last=True)
def evaluate(model, batch):
    x, y = batch
    out = model(x)
    return F.cross_entropy(out, y), {"output": out}
start, cpu_start = time.perf_counter(), time.process_time()
stats = estimate_learning_coeff_with_summary(
    model, loader, evaluate=evaluate, sampling_method=SGLD,
    optimizer_kwargs=dict(lr=args["epsilon"], localization=args["gamma"], nbeta=args["nbeta"]),
    num_chains=args["chains"], num_draws=args["draws"], device=args["device"], online=False, verbose=False, seed=args["seed"], cores=1,
    init_loss=torch.tensor(args["init_loss"]))
seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
per_chain = [float(stats[f"llc-chain/{i}"]) for i in range(args["chains"])]
print("RESULT" + json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "mean": float(stats["llc/mean"]), "std": float(stats["llc/std"]),
                             "per_chain": per_chain}))
'''


def digits_mlp(seed:int=0):
    "An MLP 64-64-10 trained on scikit-learn's 8x8 digits (inputs in [0, 1]), and the training tensors."
    from sklearn.datasets import load_digits
    digits = load_digits()
    x, y = torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()
    return model, x, y


def run_devinterp(python:str, data_file:Path, settings:dict) -> dict:
    "One devinterp estimate in its own environment; its seconds, mean and std."
    proc = subprocess.run([python, "-c", DEVINTERP_RUN, json.dumps({**settings, "data": str(data_file)})],
                          capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0 or "RESULT" not in proc.stdout:
        raise RuntimeError(f"devinterp failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
    return json.loads(proc.stdout.split("RESULT", 1)[1])


def run_lcc_nb(model, loader, settings:dict) -> dict:
    start, cpu_start = time.perf_counter(), time.process_time()
    res = estimate_llc(model, loader, loss_fn=F.cross_entropy, epsilon=settings["epsilon"], gamma=settings["gamma"],
                       nbeta=settings["nbeta"], num_chains=settings["chains"], num_draws=settings["draws"], seed=settings.get("seed", 0),
                       device=settings["device"], train_mode=True)
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start, "mean": res.mean, "std": res.std, "per_chain": res.per_chain.tolist(), "result": res}


def _clock(device:torch.device):
    "The clock of the floor ratio: this process's CPU time on a CPU (other processes' load does not count), else wall time."
    if device.type == "cpu": return time.process_time
    def wall():
        torch.cuda.synchronize(); return time.perf_counter()
    return wall


class _TimedEngine(_VmapEngine):
    "The sampler's engine, adding the time of its calls (the batched forward + backward inside the sampler) to `spent`."
    spent, clock = 0.0, time.process_time
    def __call__(self, w, x, y):
        start = _TimedEngine.clock()
        out = super().__call__(w, x, y)
        _TimedEngine.spent += _TimedEngine.clock() - start
        return out


def floor_and_sampler_per_step(model, loader, settings:dict, rounds:int=5, steps:int=200) -> dict:
    "Seconds per SGLD step of the sampler, of its floor alone, and of the floor's calls inside the sampler (in situ).\n\n"
    "Floor: one batched forward + backward of all chains on one minibatch. The sampler and the floor alone are measured in\n"
    "alternating blocks of `steps` steps, best of `rounds` each; in situ, the same engine is timed inside each sampler run,\n"
    "so both sides of that ratio see the same machine load."
    device = torch.device(settings["device"])
    flat, clock = _Flat(model), _clock(device)
    engine = _VmapEngine(model, flat, _fixed_tensors(model, flat, device), F.cross_entropy, device, None)
    w = flat.flatten(model, device).expand(settings["chains"], -1).clone()
    x, y = next(ChainBatches(loader, settings["batch_size"], list(range(settings["chains"])), device))
    sampler = dict(loss_fn=F.cross_entropy, epsilon=settings["epsilon"], gamma=settings["gamma"], nbeta=settings["nbeta"],
                   num_chains=settings["chains"], num_draws=steps, device=settings["device"], train_mode=True,
                   vectorize=True, init_loss_batches=1)                     # one init-loss batch: the time is the sampler's
    for _ in range(10): engine(w, x, y)
    best = {"floor": math.inf, "sampler": math.inf, "in_situ_ratio": math.inf}
    _TimedEngine.clock, engines = clock, estimator._VmapEngine
    for _ in range(rounds):
        start = clock()
        for _ in range(steps): engine(w, x, y)
        best["floor"] = min(best["floor"], (clock() - start) / steps)
        _TimedEngine.spent, estimator._VmapEngine = 0.0, _TimedEngine
        try:
            start = clock()
            estimate_llc(model, loader, **sampler)
            seconds = clock() - start
        finally: estimator._VmapEngine = engines
        best["sampler"] = min(best["sampler"], seconds / steps)
        best["in_situ_ratio"] = min(best["in_situ_ratio"], seconds / _TimedEngine.spent)
    return best


def overhead_profile(model, loader, settings:dict, steps:int=500, rounds:int=5) -> dict:
    "Microseconds per SGLD step of the floor and of each part of the sampler beyond it, each timed alone (best of `rounds`):\n\n"
    "the noise, the minibatch gather, the fused update, the finiteness check, and the whole loop around an engine that only\n"
    "returns a stored loss and gradient (two copies), with the MALA statistic every 10 steps and never (10**9)."
    device, chains = torch.device(settings["device"]), settings["chains"]
    flat, clock = _Flat(model), _clock(device)
    engine = _VmapEngine(model, flat, _fixed_tensors(model, flat, device), F.cross_entropy, device, None)
    w0, seeds = flat.flatten(model, device).expand(chains, -1), _chain_seeds(0, chains)
    batches = lambda: ChainBatches(loader, settings["batch_size"], [s[0] for s in seeds], device, steps)
    noises = lambda: NoiseStreams([s[1] for s in seeds], w0.shape[1], device, w0.dtype, steps)
    x, y = next(batches())
    loss, grad = engine(w0, x, y)
    config = lambda every: SGLDConfig(epsilon=settings["epsilon"], gamma=settings["gamma"], num_chains=chains, num_draws=steps, mala_every=every)
    update, w, noise = _Step(w0, config(10), settings["nbeta"]), w0.clone(), torch.randn(w0.shape, device=device)
    stored = lambda w, x, y: (loss.clone(), grad.clone())
    def repeat(fn): return lambda: [fn() for _ in range(steps)]
    def chained(make): return lambda: (lambda it: [next(it) for _ in range(steps)])(make())
    parts = {"floor: batched forward + backward": repeat(lambda: engine(w0, x, y)), "noise": chained(noises),
             "minibatch gather": chained(batches), "fused update (3 in-place ops)": repeat(lambda: update.fused(w, grad, noise)),
             "finiteness check (one sum)": repeat(lambda: _all_finite(loss, w)), "stored engine (2 copies)": repeat(lambda: stored(w0, x, y)),
             "loop, stored engine, MALA every 10": lambda: _sample(stored, w0, batches(), noises(), config(10), settings["nbeta"]),
             "loop, stored engine, no MALA": lambda: _sample(stored, w0, batches(), noises(), config(10**9), settings["nbeta"])}
    out = {}
    for name, fn in parts.items():
        fn(); best = math.inf
        for _ in range(rounds):
            start = clock(); fn(); best = min(best, clock() - start)
        out[name] = best / steps * 1e6
    return out


def pooled_estimate(runs:list) -> dict:
    "The chains of every repeat (one seed each) pooled: mean, standard error, and the per-seed means."
    chains = np.concatenate([run["per_chain"] for run in runs])
    mean, se = float(np.mean(chains)), float(np.std(chains, ddof=1) / math.sqrt(len(chains)))
    seeds = ", ".join(f"{run['mean']:.3f}" for run in runs)
    return {"mean": mean, "se": se, "text": f"LLC {mean:.3f} +- {se:.3f} (s.e., {len(chains)} chains; per seed {seeds})"}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chains", type=int, default=8); p.add_argument("--draws", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=64); p.add_argument("--epsilon", type=float, default=1e-4)
    p.add_argument("--gamma", type=float, default=100.0); p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--profile", action="store_true", help="also time each part of the sampler beyond its floor")
    p.add_argument("--devinterp-python", default=os.environ.get("DEVINTERP_PYTHON", "/tmp/devinterp_venv/bin/python"))
    args = p.parse_args()
    threads = torch.get_num_threads()
    settings = dict(chains=args.chains, draws=args.draws, batch_size=args.batch_size, epsilon=args.epsilon, gamma=args.gamma,
                    nbeta=default_nbeta(args.batch_size), device=args.device, threads=threads)
    print(f"torch {torch.__version__}, device {args.device}, {threads} torch threads; MLP 64-64-10 on digits, "
          f"{args.chains} chains x {args.draws} draws, batch {args.batch_size}, eps {args.epsilon:g}, gamma {args.gamma:g}, "
          f"nbeta {settings['nbeta']:.4g}")
    model, x, y = digits_mlp()
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True, drop_last=True)   # lcc_nb's batches are always full
    settings["init_loss"] = dataset_loss(model.train(), loader, F.cross_entropy)
    run_lcc_nb(model, loader, settings | {"draws": 5})                       # warm-up (allocator, lazy imports)

    runs = {"devinterp": [], "lcc_nb": []}
    skip = None if Path(args.devinterp_python).exists() else f"no devinterp environment at {args.devinterp_python} (see the docstring)"
    with tempfile.TemporaryDirectory() as tmp:
        data_file = Path(tmp) / "data.pt"
        torch.save({"model": model.state_dict(), "x": x, "y": y}, data_file)
        for repeat in range(args.repeats):                                    # alternating: both see the same machine load
            seeded = settings | {"seed": repeat}                              # a new seed each repeat: the estimates are pooled
            if skip is None:
                try: runs["devinterp"].append(run_devinterp(args.devinterp_python, data_file, seeded))
                except RuntimeError as e: skip = str(e)
            runs["lcc_nb"].append(run_lcc_nb(model, loader, seeded))
    best = {name: min(r, key=lambda run: run["seconds"]) for name, r in runs.items() if r}
    pooled = {name: pooled_estimate(r) for name, r in runs.items() if r}
    ours = best["lcc_nb"]
    print(f"lcc_nb     best of {len(runs['lcc_nb'])}: {ours['seconds']:.2f} s   {pooled['lcc_nb']['text']} "
          f"(MALA {ours['result'].mala_acceptance:.3f}, devinterp statistic)")
    if skip: print(f"devinterp: skipped: {skip}")
    else:
        theirs, a, b = best["devinterp"], pooled["lcc_nb"], pooled["devinterp"]
        sigma = math.hypot(a["se"], b["se"])
        agree = abs(a["mean"] - b["mean"]) <= 2 * sigma
        print(f"devinterp  best of {len(runs['devinterp'])}: {theirs['seconds']:.2f} s   {b['text']}")
        cpu = min(run["cpu_seconds"] for run in runs["devinterp"]) / min(run["cpu_seconds"] for run in runs["lcc_nb"])
        print(f"devinterp / lcc_nb time: {theirs['seconds'] / ours['seconds']:.2f}x wall, {cpu:.2f}x CPU time (target >= 3x); pooled estimates "
              f"{'agree' if agree else 'DIFFER'} within 2 sigma (|diff| {abs(a['mean'] - b['mean']):.3f}, 2 sigma {2 * sigma:.3f})")
    timing = floor_and_sampler_per_step(model, loader, settings)
    clock = "CPU time of this process" if args.device == "cpu" else "wall time"
    print(f"sampler {timing['sampler'] * 1e3:.3f} ms per step, floor (one batched forward + backward of {args.chains} chains) "
          f"{timing['floor'] * 1e3:.3f} ms: {timing['sampler'] / timing['floor']:.2f}x the floor measured alone, "
          f"{timing['in_situ_ratio']:.2f}x the floor's calls inside the sampler (target <= 1.3x; {clock}, best of 5)")
    if args.profile:
        profile = overhead_profile(model, loader, settings)
        floor = profile["floor: batched forward + backward"]
        for name, us in profile.items(): print(f"  {name:40s} {us:8.1f} us per step  {us / floor:6.1%} of the floor")


if __name__ == "__main__":
    main()
