"""Side-by-side benchmark of lcc_nb's clustering against the usual baselines, in one process on the same data.

1. k-means, 50k x 256, k=100 (Gaussian mixture): lcc_nb `kmeans` (greedy k-means++ + faiss Lloyd on all points)
   vs scikit-learn `KMeans(init="k-means++", n_init=1)`; also faiss with its own random init, to show why the init
   matters. Target: faster than scikit-learn, inertia at most 1% above.
2. k-NN graph + communities, 20k points, k=50: lcc_nb `knn_graph` + `community_labels` (igraph Louvain) vs
   faiss k-NN + networkx `louvain_communities`. Target: >= 5x faster, same number of communities.

Run: `python bench/clustering.py` (add `--quick` for a smaller smoke run).
"""
from __future__ import annotations
import argparse, time

import numpy as np


def gaussian_mixture(n:int, dim:int, k:int, spread:float, seed:int=0):
    "`n` points from `k` isotropic Gaussians of unit std, centres ~ N(0, spread²), unequal weights."
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, spread, size=(k, dim))
    weights = rng.dirichlet(np.full(k, 5.0))
    y = rng.choice(k, size=n, p=weights)
    return (centres[y] + rng.normal(size=(n, dim))).astype(np.float32), y


def timed(fn):
    "`(result, seconds)` of one call."
    start = time.perf_counter(); result = fn(); return result, time.perf_counter() - start


def bench_kmeans(n:int, dim:int, k:int):
    import faiss
    from sklearn.cluster import KMeans
    from lcc_nb.clustering import inertia, assign, kmeans
    x, _ = gaussian_mixture(n, dim, k, spread=1.0)
    warm_up = x[:20 * k]                     # first calls load libraries and thread pools: keep that out of the timings
    kmeans(warm_up, k, niter=2); KMeans(k, n_init=1, max_iter=2).fit(warm_up)
    print(f"\n## k-means: {n} x {dim}, k={k} (Gaussian mixture)")
    ours, t_ours = timed(lambda: kmeans(x, k, niter=20, seed=0))
    sk, t_sk = timed(lambda: KMeans(k, init="k-means++", n_init=1, random_state=0).fit(x))
    def faiss_random_init():
        km = faiss.Kmeans(dim, k, niter=20, seed=0, max_points_per_centroid=-(-n // k)); km.train(x)
        return inertia(x, assign(x, km.centroids), km.centroids)
    faiss_inertia, t_faiss = timed(faiss_random_init)
    print(f"{'method':42s} {'time s':>8s} {'inertia':>14s} {'vs sklearn':>10s}")
    print(f"{'scikit-learn KMeans(k-means++, n_init=1)':42s} {t_sk:8.2f} {sk.inertia_:14.1f} {1:10.4f}  ({sk.n_iter_} iterations)")
    print(f"{'lcc_nb kmeans (' + ours.backend + ', niter=20)':42s} {t_ours:8.2f} {ours.inertia:14.1f} {ours.inertia / sk.inertia_:10.4f}")
    print(f"{'faiss Kmeans, random init (niter=20)':42s} {t_faiss:8.2f} {faiss_inertia:14.1f} {faiss_inertia / sk.inertia_:10.4f}")
    print(f"time ratio sklearn / lcc_nb = {t_sk / t_ours:.2f}x (target > 1); "
          f"inertia ratio lcc_nb / sklearn = {ours.inertia / sk.inertia_:.4f} (target <= 1.01)")


def bench_communities(n:int, dim:int, clusters:int, k:int):
    import networkx as nx
    from lcc_nb.clustering import community_labels, knn_graph, nearest_neighbors
    from lcc_nb.metrics import ari
    x, y = gaussian_mixture(n, dim, clusters, spread=3.0, seed=1)
    community_labels(x[:500], 10, method="leiden"); nx.community.louvain_communities(nx.path_graph(50), seed=0)
    print(f"\n## k-NN graph + communities: {n} points x {dim}, k={k}, {clusters} true clusters")
    ours, t_ours = timed(lambda: community_labels(knn_graph(x, k), method="louvain", seed=0))
    leiden, t_leiden = timed(lambda: community_labels(knn_graph(x, k), method="leiden", seed=0))
    approximate, t_approximate = timed(lambda: community_labels(knn_graph(x, k, exact=False), method="louvain", seed=0))
    def networkx_louvain():
        _, idx = nearest_neighbors(x, x, k + 1)
        graph = nx.Graph()
        graph.add_nodes_from(range(n))
        graph.add_edges_from((i, int(j)) for i, row in enumerate(idx) for j in row if j != i)
        labels = np.empty(n, np.int64)
        for c, members in enumerate(nx.community.louvain_communities(graph, seed=0)): labels[list(members)] = c
        return labels
    baseline, t_base = timed(networkx_louvain)
    print(f"{'method':50s} {'time s':>8s} {'communities':>11s} {'ARI':>6s}")
    for name, labels, t in [("faiss k-NN (exact) + networkx louvain_communities", baseline, t_base),
                            ("lcc_nb knn_graph + community_labels louvain", ours, t_ours),
                            ("lcc_nb knn_graph + community_labels leiden", leiden, t_leiden),
                            ("lcc_nb knn_graph(exact=False) + louvain", approximate, t_approximate)]:
        print(f"{name:50s} {t:8.2f} {len(np.unique(labels)):11d} {ari(y, labels):6.3f}")
    print(f"speed-up networkx / lcc_nb louvain (both exact k-NN) = {t_base / t_ours:.1f}x (target >= 5), "
          f"with approximate k-NN {t_base / t_approximate:.1f}x; communities "
          f"{len(np.unique(ours))} vs {len(np.unique(baseline))} (target: equal)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    bench_kmeans(50_000 // scale, 256, 100)
    bench_communities(20_000 // scale, 32, 20, 50)
