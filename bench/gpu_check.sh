#!/usr/bin/env bash
# Run every CUDA path of lcc_nb once and print PASS / FAIL / SKIP and the seconds each took (under 5 minutes on one GPU):
# fp16 autocast + GradScaler and bf16 training steps, an LCC epoch, a DeepCluster epoch, faiss-gpu k-means and k-NN
# (when faiss has GPUs), LLC chains on CUDA, and a DDP nccl process group (min(2, GPUs) processes; one process still
# initialises nccl) training LCC. Small data (scikit-learn's digits, blobs), so it checks the paths, not their speed.
#
# Usage: bench/gpu_check.sh [OUT_FILE]     (OUT_FILE also gets the report, e.g. bench/gpu_check_h100.txt to commit)
# Exit status: 0 when every path passed or was skipped (on a machine without CUDA: "SKIP: no CUDA"), 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} PYTHONUNBUFFERED=1
OUT=${1:-/dev/null}

"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)"
status=$?
if [ "$status" -ne 0 ]; then
  [ "$status" -eq 3 ] || { echo "FAIL: $PY cannot import torch"; exit 1; }
  echo "SKIP: no CUDA ($("$PY" -c 'import torch; print("torch", torch.__version__)') sees no GPU)" | tee "$OUT"
  exit 0
fi

CHECK=$(mktemp --suffix=_gpu_check.py)
trap 'rm -f "$CHECK"' EXIT
cat > "$CHECK" <<'PYTHON'
import math, signal, sys, time, traceback

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

PATH_TIMEOUT_S = 90   # a hung path (e.g. an nccl rendezvous) fails instead of blocking the others
results = []

class PathTimeout(Exception): pass

def _alarm(signum, frame): raise PathTimeout(f"no answer within {PATH_TIMEOUT_S} s")

def check(name, fn):
    "Run one path: PASS with its detail, SKIP when it returns ('skip', why), FAIL with the error."
    signal.signal(signal.SIGALRM, _alarm); signal.alarm(PATH_TIMEOUT_S)
    t0 = time.perf_counter()
    try:
        detail = fn()
        status, detail = detail if isinstance(detail, tuple) and detail[0] == "skip" else ("pass", detail)
    except Exception as e:
        status, detail = "fail", f"{type(e).__name__}: {e}"
        traceback.print_exc(limit=3, file=sys.stderr)
    finally: signal.alarm(0)
    seconds = time.perf_counter() - t0
    results.append(status)
    print(f"{status.upper():4}  {name:34} {seconds:6.1f} s  {detail}", flush=True)

def digits():
    from lcc_nb.data import get_dataset
    return get_dataset("digits", "train"), get_dataset("digits", "test")

def train_with(precision, dtype):
    "Two epochs of lcc/small_cnn through the one loop at `precision`; the latents must come out in `dtype`."
    from lcc_nb.core import set_seed
    from lcc_nb.models import get_model
    from lcc_nb.train import TrainConfig, Trainer
    set_seed(0)
    net, seen = get_model("lcc/small_cnn", 10), set()
    net.fc1.register_forward_hook(lambda m, i, out: seen.add(out.dtype))
    train, test = digits()
    trainer = Trainer(net, train, None, test, TrainConfig(epochs=2, batch_size=128, lr=0.05, precision=precision,
                                                          device="cuda", progress=False))
    result = trainer.fit()
    acc = result.test_metrics["test_acc"]
    assert dtype in seen, f"fc1 ran in {seen}, not {dtype}"
    assert next(net.parameters()).is_cuda and acc > 0.5, f"test accuracy {acc:.3f}"
    scale = f", loss scale {trainer.scaler.get_scale():g}" if trainer.scaler is not None else ""
    assert (trainer.scaler is not None) == (precision == "16"), "GradScaler is used exactly with fp16"
    return f"test acc {acc:.3f}, fc1 in {dtype}{scale}"

def fp16(): return train_with("16", torch.float16)

def bf16():
    if not torch.cuda.is_bf16_supported(): return ("skip", f"{torch.cuda.get_device_name()} has no bf16")
    return train_with("bf16", torch.bfloat16)

def lcc_epoch():
    from lcc_nb.lcc import run_lcc
    run = run_lcc(lcc_submodules="fc1", epochs=2, batch_size=128, lr=0.05, dataset="digits", model="lcc/small_cnn",
                  device="cuda", progress=False, out_dir=None)
    history = run.plugin.history
    assert history and next(run.model.parameters()).is_cuda, "no LCC epoch recorded"
    return f"{len(history)} LCC epochs, test acc {run.train.test_metrics.get('test_acc', float('nan')):.3f}"

def deepcluster_epoch():
    from lcc_nb.deepcluster import run_deepcluster
    run = run_deepcluster(k=10, epochs=1, batch_size=128, dataset="digits", model_options={"hidden": 256}, pca_dim=32,
                          device="cuda", progress=False, out_dir=None)
    assert len(np.unique(run.labels)) > 1, "all samples in one cluster"
    return f"pseudo-labels {run.labels.shape}, " + ", ".join(f"{k} {v:.3f}" for k, v in run.metrics.items() if isinstance(v, float))[:80]

def faiss_paths():
    "faiss-gpu k-means and exact k-NN against scikit-learn on the same blobs."
    from lcc_nb.clustering import faiss_gpus, has_faiss
    if not has_faiss(): return ("skip", "faiss is not installed (pip install lcc_nb[gpu])")
    if faiss_gpus() == 0: return ("skip", "faiss has no GPU (faiss-cpu build)")
    from sklearn.datasets import make_blobs
    x, _ = make_blobs(20_000, 64, centers=10, random_state=0)
    return x.astype(np.float32)

def faiss_kmeans(x):
    from lcc_nb.clustering import kmeans
    from lcc_nb.metrics import nmi
    gpu, cpu = kmeans(x, 10, seed=0, backend="faiss"), kmeans(x, 10, seed=0, backend="sklearn")
    agreement = nmi(cpu.labels, gpu.labels)
    assert agreement > 0.95 and gpu.inertia <= 1.01 * cpu.inertia, f"NMI {agreement:.3f}, inertia {gpu.inertia:.4g} vs {cpu.inertia:.4g}"
    return f"NMI with scikit-learn {agreement:.3f}, inertia ratio {gpu.inertia / cpu.inertia:.4f}"

def faiss_knn(x):
    from sklearn.neighbors import NearestNeighbors
    from lcc_nb.clustering import nearest_neighbors
    _, idx = nearest_neighbors(x, x[:2000], 10)
    ref = NearestNeighbors(n_neighbors=10, algorithm="brute").fit(x).kneighbors(x[:2000], return_distance=False)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx, ref)])
    assert recall > 0.99, f"recall {recall:.4f}"
    return f"recall vs scikit-learn brute force {recall:.4f}"

def llc_chains():
    from lcc_nb.core import set_seed
    from lcc_nb.llc import estimate_llc
    from lcc_nb.models import get_model
    set_seed(0)
    train, _ = digits()
    res = estimate_llc(get_model("lcc/small_cnn", 10), DataLoader(train, batch_size=64, shuffle=True), loss_fn=F.cross_entropy,
                       epsilon=1e-4, gamma=100.0, num_chains=4, num_draws=50, device="cuda")
    assert np.isfinite(res.mean) and np.isfinite(np.asarray(res.loss_trace)).all(), f"LLC {res.mean}"
    return f"LLC {res.mean:.2f} ± {res.std:.2f} over {len(res.per_chain)} chains"

def ddp_nccl():
    "An nccl process group of min(2, GPUs) processes: an all-gather, then an LCC epoch trained under DDP."
    from lcc_nb.distributed import all_gather_object, launch
    from lcc_nb.lcc import run_lcc
    n = min(2, torch.cuda.device_count())
    gathered = launch(all_gather_object, "rank", nprocs=n, backend="nccl")
    assert gathered == ["rank"] * n, gathered
    run = launch(run_lcc, {"lcc_submodules": "fc1"}, {"epochs": 1, "batch_size": 64, "device": "cuda", "progress": False},
                 {"dataset": "digits"}, {"model": "lcc/small_cnn"}, nprocs=n, backend="nccl")
    return f"{n} process{'es' if n > 1 else ''}: all_gather ok, DDP LCC epoch test acc {run.train.test_metrics.get('test_acc', float('nan')):.3f}"

def main():
    from lcc_nb.clustering import faiss_gpus
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s): "
          f"{', '.join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))}; faiss GPUs: {faiss_gpus()}", flush=True)
    check("fp16 autocast + GradScaler", fp16)
    check("bf16 autocast", bf16)
    check("LCC epochs", lcc_epoch)
    check("DeepCluster epoch", deepcluster_epoch)
    blobs = faiss_paths()
    if isinstance(blobs, tuple):
        for name in ("faiss-gpu k-means", "faiss-gpu k-NN"): check(name, lambda: blobs)
    else:
        check("faiss-gpu k-means", lambda: faiss_kmeans(blobs))
        check("faiss-gpu k-NN", lambda: faiss_knn(blobs))
    check("LLC chains on CUDA", llc_chains)
    check("DDP nccl process group", ddp_nccl)
    print(f"{results.count('pass')} passed, {results.count('fail')} failed, {results.count('skip')} skipped")
    return 1 if "fail" in results else 0

if __name__ == "__main__":
    sys.exit(main())
PYTHON

timeout 300 "$PY" "$CHECK" 2> >(tail -n 40 >&2) | tee "$OUT"
status=${PIPESTATUS[0]}
[ "$status" -eq 124 ] && echo "FAIL: the check ran past 5 minutes" | tee -a "$OUT"
exit $(( status == 0 ? 0 : 1 ))
