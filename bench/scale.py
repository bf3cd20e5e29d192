"""Scale: the LCC clustering step on 50,000 x 25,088 float32 latents (CIFAR-100's training set through ResNet-18's
last stage, flattened: 5 GB), held as a disk-backed np.memmap.

Workload: synthetic latents with cluster structure (100 classes; a 64-dimensional class signal, N(0,1) centres and
N(0, 1.2²) per-sample variation, spread over all 25,088 dimensions by a random linear map, plus N(0,1) noise, ReLU), written once to
/tmp/lcc_nb_scale/ and reused. If /tmp has less than 15 GB free the width falls back to 8,192 (printed).

Each measured step runs in its own process, so that its peak RSS (resource.getrusage, ru_maxrss) is its own:
1. `pca`: the LCC clustering step with the randomized PCA: `pca(x, 256)` (method "auto" = randomized, streamed over
   row blocks of the memmap) -> exact k-NN graph (faiss IndexFlatL2, k=5) -> Louvain communities.
   Target: peak RSS <= 8 GB, wall time <= 5 min on this machine.
2. `random_projection`: the same with `random_projection(x, 256)` instead of the PCA.
3. `exact`: agreement on a 10k random subsample: communities of the exact k-NN graph of the subsample's raw
   25,088-dimensional rows vs communities of the k-NN graph of the same rows' reduced coordinates (from 1 and 2); NMI.
(The exact PCA of all 50,000 rows is not run: it forms the 25,088^2 covariance and had not finished after 14 minutes
at 12.4 GB resident.) `lcc.cluster_latents(x, y, k=5, pca_dim=256)` makes the same calls as step 1 (`--lcc` times it too).

DeepCluster's feature step (`--deepcluster`, instead of the LCC steps): `deepcluster.preprocess_features(x, 256)`
(randomized PCA streamed over the memmap, whitening, L2 rows) then `kmeans(z, 100, niter=20)`, in its own process:
time and peak RSS (targets as above). Agreement on the same 10k subsample: k-means labels of an exact PCA (full SVD,
scikit-learn) + whitening + L2 of the subsample vs (a) the full run's labels of those rows and (b) the randomized
pipeline run on the subsample alone; for scale, k-means' own seed-to-seed NMI on the exact coordinates.
Measured (bench/results/scale_deepcluster.txt): 84 s, 6.0 GB peak RSS; the full SVD of the 10k x 25,088 subsample
alone takes ~26 minutes on this CPU.

Run: `python bench/scale.py` (about 10 minutes on 2 cores); `--rows/--dim` for other sizes.
"""
from __future__ import annotations
import argparse, json, os, resource, shutil, subprocess, sys, time
from pathlib import Path

import numpy as np

ROOT = Path("/tmp/lcc_nb_scale")
CLASSES, SIGNAL_DIM = 100, 64


def latents_path(n:int, d:int) -> Path: return ROOT/f"latents_{n}x{d}.f32"


def make_latents(n:int, d:int, seed:int=0, block:int=2000):
    "Write `n` x `d` float32 synthetic latents (raw, row-major) and their classes; skip if already there."
    path = latents_path(n, d)
    if path.exists() and path.stat().st_size == n * d * 4: return
    ROOT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (CLASSES, SIGNAL_DIM)).astype(np.float32)
    spread = (rng.normal(0, 1, (SIGNAL_DIM, d)) / np.sqrt(SIGNAL_DIM)).astype(np.float32)
    y = rng.integers(0, CLASSES, n)
    with open(str(path) + ".part", "wb") as f:          # plain writes: the writer's RSS stays small
        for start in range(0, n, block):
            rows = y[start:start + block]
            signal = centres[rows] + rng.normal(0, 1.2, (len(rows), SIGNAL_DIM)).astype(np.float32)
            x = signal @ spread + rng.standard_normal((len(rows), d), dtype=np.float32)
            np.maximum(x, 0, out=x).tofile(f)
    os.replace(str(path) + ".part", path)
    np.save(ROOT/f"classes_{n}.npy", y)


def open_latents(n:int, d:int) -> np.memmap: return np.memmap(latents_path(n, d), np.float32, "r", shape=(n, d))


def peak_rss_gb() -> float: return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # Linux: KiB


def reduced_step(n:int, d:int, reduction:str, dim:int, k:int, use_lcc:bool) -> dict:
    "Reduce the memmap, exact k-NN graph, Louvain; time and peak RSS of this process. Saves the reduced rows."
    from lcc_nb.clustering import community_labels, knn_graph, reduce_dim
    if use_lcc: from lcc_nb.lcc import cluster_latents    # imports torch: outside the timing
    x, y, timings = open_latents(n, d), np.load(ROOT/f"classes_{n}.npy"), {}
    start = time.perf_counter()
    if use_lcc:
        clusters = cluster_latents(x, y, k=k, pca_dim=dim)
        labels, timings, z = clusters.y_cluster, clusters.timings, None
    else:
        z = reduce_dim(x, dim, reduction); timings["reduce"] = time.perf_counter() - start
        graph = knn_graph(z, k); timings["knn_graph"] = time.perf_counter() - start - sum(timings.values())
        labels = community_labels(graph, method="louvain"); timings["communities"] = time.perf_counter() - start - sum(timings.values())
        np.save(ROOT/f"reduced_{reduction}_{n}x{d}.npy", z)
    from lcc_nb.metrics import nmi
    return {"seconds": time.perf_counter() - start, "peak_rss_gb": peak_rss_gb(), "communities": int(labels.max() + 1),
            "nmi_classes": nmi(y, labels), "timings": {key: round(v, 1) for key, v in timings.items()}}


def exact_step(n:int, d:int, sample:int, k:int, reductions:list[str]) -> dict:
    "Communities of the exact graph of a random subsample vs those of its reduced rows' graph (NMI)."
    from lcc_nb.clustering import community_labels, knn_graph
    from lcc_nb.metrics import nmi
    rows = np.sort(np.random.default_rng(1).choice(n, sample, replace=False))
    y, start = np.load(ROOT/f"classes_{n}.npy")[rows], time.perf_counter()
    graph = knn_graph(np.asarray(open_latents(n, d)[rows]), k)
    exact = community_labels(graph, method="louvain")
    out = {"seconds": time.perf_counter() - start, "peak_rss_gb": peak_rss_gb(), "communities": int(exact.max() + 1),
           "nmi_classes": nmi(y, exact), "nmi_other_seed": nmi(exact, community_labels(graph, method="louvain", seed=1))}
    for reduction in reductions:
        reduced = community_labels(knn_graph(np.load(ROOT/f"reduced_{reduction}_{n}x{d}.npy")[rows], k), method="louvain")
        out[reduction] = {"nmi_with_exact": nmi(exact, reduced), "communities": int(reduced.max() + 1), "nmi_classes": nmi(y, reduced)}
    return out


def deepcluster_step(n:int, d:int, dim:int, clusters:int) -> dict:
    "DeepCluster's feature step on the memmap: PCA + whitening + L2, then k-means; time and peak RSS of this process."
    from lcc_nb.clustering import kmeans
    from lcc_nb.deepcluster import preprocess_features   # imports torch: outside the timing
    from lcc_nb.metrics import nmi
    x, y = open_latents(n, d), np.load(ROOT/f"classes_{n}.npy")
    start = time.perf_counter()
    z = preprocess_features(x, dim); reduced = time.perf_counter()
    labels = kmeans(z, clusters, niter=20, seed=0).labels
    np.save(ROOT/f"deepcluster_labels_{n}x{d}.npy", labels)
    return {"seconds": time.perf_counter() - start, "peak_rss_gb": peak_rss_gb(), "nmi_classes": nmi(y, labels),
            "timings": {"pca_whiten_l2": round(reduced - start, 1), "kmeans": round(time.perf_counter() - reduced, 1)}}


def exact_features(x:np.ndarray, dim:int) -> np.ndarray:
    "An exact PCA (full SVD) to `dim` components, whitened, rows L2-normalised: DeepCluster's pre-processing, exactly."
    from sklearn.decomposition import PCA
    fitted = PCA(dim, svd_solver="full").fit(x)
    z = fitted.transform(x) / np.sqrt(fitted.explained_variance_ + 1e-12)
    return (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)


def deepcluster_exact_step(n:int, d:int, dim:int, clusters:int, sample:int) -> dict:
    "k-means labels of the exact pipeline on a random subsample vs the full run's and the randomized pipeline's (NMI)."
    from lcc_nb.clustering import kmeans
    from lcc_nb.deepcluster import preprocess_features
    from lcc_nb.metrics import nmi
    rows = np.sort(np.random.default_rng(1).choice(n, sample, replace=False))
    x, y, start = np.asarray(open_latents(n, d)[rows]), np.load(ROOT/f"classes_{n}.npy")[rows], time.perf_counter()
    z = exact_features(x, dim)
    exact = kmeans(z, clusters, niter=20, seed=0).labels
    seconds = time.perf_counter() - start
    randomized = kmeans(preprocess_features(x, dim), clusters, niter=20, seed=0).labels
    full = np.load(ROOT/f"deepcluster_labels_{n}x{d}.npy")[rows]
    return {"seconds": seconds, "peak_rss_gb": peak_rss_gb(), "nmi_classes": nmi(y, exact), "nmi_full_run": nmi(exact, full),
            "nmi_randomized_subsample": nmi(exact, randomized),
            "nmi_other_seed": nmi(exact, kmeans(z, clusters, niter=20, seed=1).labels)}


def deepcluster_main(n:int, d:int, dim:int, clusters:int, sample:int):
    print(f"## DeepCluster's feature step at scale: {n} x {d} float32 latents (np.memmap), PCA to {dim} + whitening + L2, "
          f"k-means k={clusters}, 20 iterations")
    r = in_child("deepcluster", n, d, dim, clusters)
    print(f"{'randomized PCA':18s} wall {r['seconds']:6.1f} s (target <= 300)  peak RSS {r['peak_rss_gb']:5.2f} GB (target <= 8)  "
          f"NMI with classes {r['nmi_classes']:.3f}  steps {r['timings']}")
    e = in_child("deepcluster_exact", n, d, dim, clusters, sample)
    print(f"agreement on a {sample}-row subsample: exact PCA (full SVD) + whitening + L2 + k-means ({e['seconds']:.0f} s, "
          f"peak RSS {e['peak_rss_gb']:.2f} GB, NMI with classes {e['nmi_classes']:.3f})\n"
          f"  NMI with the full run's labels of those rows {e['nmi_full_run']:.3f}; with the randomized pipeline on the "
          f"subsample {e['nmi_randomized_subsample']:.3f}; k-means' own seed-to-seed NMI {e['nmi_other_seed']:.3f}")


def in_child(*args) -> dict:
    "Run one step of this script in a fresh process and return its JSON result."
    done = subprocess.run([sys.executable, __file__, "--step", *map(str, args)], capture_output=True, text=True)
    if done.returncode: raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(n:int, d:int, dim:int, k:int, sample:int, use_lcc:bool):
    free_gb = shutil.disk_usage("/tmp").free / 2**30
    if not latents_path(n, d).exists() and free_gb < 15 and d > 8192:
        print(f"/tmp has {free_gb:.0f} GB free (< 15 GB): width {d} -> 8192"); d = 8192
    start = time.perf_counter(); make_latents(n, d)
    import faiss
    print(f"## LCC clustering step at scale: {n} x {d} float32 latents ({n * d * 4 / 2**30:.1f} GiB np.memmap in {ROOT}, "
          f"written in {time.perf_counter() - start:.0f} s), {CLASSES} classes; reduce to {dim}, exact k-NN k={k}, Louvain\n"
          f"threads: faiss {faiss.omp_get_max_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"{os.cpu_count()} CPUs; /tmp free {free_gb:.0f} GB")
    reductions = ["pca", "random_projection"]
    for reduction in reductions:
        r = in_child("reduce", n, d, reduction, dim, k, 0)
        print(f"{reduction:18s} wall {r['seconds']:6.1f} s (target <= 300)  peak RSS {r['peak_rss_gb']:5.2f} GB (target <= 8)  "
              f"{r['communities']} communities, NMI with classes {r['nmi_classes']:.3f}  steps {r['timings']}")
    if use_lcc:
        r = in_child("reduce", n, d, "pca", dim, k, 1)
        print(f"{'lcc.cluster_latents':18s} wall {r['seconds']:6.1f} s  peak RSS {r['peak_rss_gb']:5.2f} GB  steps {r['timings']}")
    e = in_child("exact", n, d, sample, k)
    print(f"agreement on a {sample}-row subsample: exact {d}-dim k-NN graph -> {e['communities']} communities "
          f"(NMI with classes {e['nmi_classes']:.3f}; {e['seconds']:.0f} s, peak RSS {e['peak_rss_gb']:.2f} GB); Louvain's own "
          f"seed-to-seed NMI on that graph {e['nmi_other_seed']:.3f} (for scale: how much Louvain alone varies)")
    for reduction in reductions:
        a = e[reduction]
        print(f"  {reduction:18s} graph -> {a['communities']} communities, NMI with the exact graph's communities "
              f"{a['nmi_with_exact']:.3f} (NMI with classes {a['nmi_classes']:.3f})")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--step":
        step, *args = sys.argv[2:]
        if step == "deepcluster":
            print(json.dumps(deepcluster_step(*map(int, args))))
        elif step == "deepcluster_exact":
            print(json.dumps(deepcluster_exact_step(*map(int, args))))
        elif step == "reduce":
            n, d, reduction, dim, k, use_lcc = args
            print(json.dumps(reduced_step(int(n), int(d), reduction, int(dim), int(k), use_lcc == "1")))
        else:
            n, d, sample, k = map(int, args)
            print(json.dumps(exact_step(n, d, sample, k, ["pca", "random_projection"])))
        sys.exit()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=25_088, help="latent width (falls back to 8192 with < 15 GB free in /tmp)")
    parser.add_argument("--reduced", type=int, default=256, help="dimension after the reduction")
    parser.add_argument("--k", type=int, default=5, help="neighbours of the k-NN graph (LCC's default)")
    parser.add_argument("--sample", type=int, default=10_000, help="rows of the exact-graph agreement check")
    parser.add_argument("--lcc", action="store_true", help="also time lcc.cluster_latents(x, y, k, pca_dim) end to end")
    parser.add_argument("--deepcluster", action="store_true", help="bench DeepCluster's feature step instead of LCC's")
    parser.add_argument("--clusters", type=int, default=100, help="DeepCluster's k-means clusters")
    args = parser.parse_args()
    if args.deepcluster:
        make_latents(args.rows, args.dim)
        deepcluster_main(args.rows, args.dim, args.reduced, args.clusters, min(args.sample, args.rows)); sys.exit()
    main(args.rows, args.dim, args.reduced, args.k, min(args.sample, args.rows), args.lcc)
