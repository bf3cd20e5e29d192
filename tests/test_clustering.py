"Clustering: the scikit-learn fallbacks answer as the faiss paths; randomized PCA vs scikit-learn; peer pressure vs a port of the reference."
import numpy as np
import pytest
import scipy.sparse as sp

import lcc_nb.clustering as clustering
from lcc_nb.core import LccError
from lcc_nb.metrics import ari
from lcc_nb.testing import toy_blobs


@pytest.fixture
def no_faiss(monkeypatch):
    monkeypatch.setattr(clustering, "has_faiss", lambda: False)


def test_auto_backend_falls_back_to_sklearn(no_faiss):
    assert clustering.resolve_backend("auto") == "sklearn"
    with pytest.raises(LccError, match="faiss is not installed"): clustering.resolve_backend("faiss")
    assert clustering.faiss_gpus() == 0


def test_kmeans_and_pca_without_faiss(no_faiss):
    x, y = toy_blobs(400, k=4, dim=6, std=0.5)
    result = clustering.kmeans(x, 4)
    assert result.backend == "sklearn" and ari(y, result.labels) == 1.0
    assert clustering.pca(x, 3, whiten=True).std(0, ddof=1) == pytest.approx(np.ones(3), rel=1e-4)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_knn_without_faiss_matches_faiss(monkeypatch, metric):
    x, _ = toy_blobs(300, k=3, dim=5, std=1.0)
    dist, idx = clustering.knn_graph(x, 7, metric=metric)
    monkeypatch.setattr(clustering, "has_faiss", lambda: False)
    dist_sk, idx_sk = clustering.knn_graph(x, 7, metric=metric)
    np.testing.assert_array_equal(idx, idx_sk)
    np.testing.assert_allclose(dist, dist_sk, atol=1e-4)


def test_communities_without_faiss(no_faiss):
    x, y = toy_blobs(300, k=3, dim=5, std=0.5)
    assert ari(y, clustering.community_labels(x, 10, method="leiden")) == 1.0


# --- k-means: the faiss and scikit-learn Lloyd paths ---

@pytest.mark.parametrize("init_sample", [None, 60])
def test_kmeans_faiss_and_sklearn_paths_agree(init_sample):
    pytest.importorskip("faiss")
    x, y = toy_blobs(1200, k=6, dim=16, std=0.8, seed=4)
    by_backend = {b: clustering.kmeans(x, 6, seed=1, backend=b, init_sample=init_sample) for b in ["faiss", "sklearn"]}
    faiss_run, sklearn_run = by_backend["faiss"], by_backend["sklearn"]
    assert faiss_run.inertia == pytest.approx(sklearn_run.inertia, rel=0.03)
    assert ari(faiss_run.labels, sklearn_run.labels) == 1.0 and ari(y, faiss_run.labels) == 1.0   # equal up to permutation


def test_kmeans_subsampled_seeding_matches_sklearn_inertia():
    from sklearn.cluster import KMeans
    x, _ = toy_blobs(3000, k=30, dim=8, std=1.5, seed=5)
    ours = np.mean([clustering.kmeans(x, 30, seed=s, init_sample=600).inertia for s in range(4)])
    theirs = np.mean([KMeans(30, n_init=1, max_iter=20, tol=0, random_state=s).fit(x).inertia_ for s in range(4)])
    assert ours <= 1.03 * theirs



def test_kmeans_random_init_answers_as_faiss_own():
    "init='random' (DeepCluster's originals: faiss' default) starts from k distinct data points; its inertia matches faiss' own k-means."
    faiss = pytest.importorskip("faiss")
    x, _ = toy_blobs(2000, k=20, dim=8, std=2.0, seed=6)
    start = clustering.initial_centroids(x, 20, "random", seed=0)
    assert len(np.unique(start, axis=0)) == 20 and all((x == c).all(1).any() for c in start)
    ours = [clustering.kmeans(x, 20, seed=s, init="random", backend="faiss").inertia for s in range(6)]
    def faiss_inertia(seed):
        km = faiss.Kmeans(x.shape[1], 20, niter=20, seed=seed, max_points_per_centroid=10_000_000)
        km.train(x)
        return float(km.index.search(x, 1)[0].sum())
    theirs = [faiss_inertia(s) for s in range(6)]
    assert np.mean(ours) == pytest.approx(np.mean(theirs), rel=0.05)
    plusplus = np.mean([clustering.kmeans(x, 20, seed=s, backend="faiss").inertia for s in range(6)])
    assert plusplus < np.mean(ours)                     # k-means++ (the default recipe) starts better on this data

# --- randomized PCA and random projection ---

def _decaying(n=1500, d=200, decay=0.9, seed=2):
    rng = np.random.default_rng(seed)
    rotation = np.linalg.qr(rng.normal(size=(d, d)))[0]
    return (rng.normal(size=(n, d)) * decay**np.arange(d) @ rotation + 1).astype(np.float32)


def test_randomized_pca_matches_sklearn(tmp_path):
    from scipy.linalg import subspace_angles
    from sklearn.decomposition import PCA
    x = _decaying()
    on_disk = np.lib.format.open_memmap(tmp_path/"x.npy", mode="w+", dtype=np.float32, shape=x.shape)
    on_disk[:] = x; on_disk.flush()
    ref = PCA(16).fit(x)
    z, model = clustering.pca(np.load(tmp_path/"x.npy", mmap_mode="r"), 16, method="randomized", return_model=True)
    assert model.variance == pytest.approx(ref.explained_variance_, rel=1e-2)
    assert np.degrees(subspace_angles(model.components.T, ref.components_.T)[1:].max()) < 1.0
    np.testing.assert_allclose(np.abs(z), np.abs(ref.transform(x)), atol=2e-2 * np.abs(z).max())


def test_pca_auto_is_randomized_above_the_threshold(monkeypatch):
    x = _decaying(300, 40)
    monkeypatch.setattr(clustering, "RANDOMIZED_PCA_ABOVE", 30)
    np.testing.assert_array_equal(clustering.pca(x, 4), clustering.pca(x, 4, method="randomized"))
    monkeypatch.setattr(clustering, "RANDOMIZED_PCA_ABOVE", 2048)
    np.testing.assert_array_equal(clustering.pca(x, 4), clustering.pca(x, 4, method="exact"))


def test_random_projection_keeps_neighbours():
    x, y = toy_blobs(400, k=4, dim=1000, std=1.0, seed=6)
    z = clustering.reduce_dim(x, 128, "random_projection")
    assert z.shape == (400, 128) and z.dtype == np.float32
    assert ari(y, clustering.community_labels(z, 10)) == 1.0


# --- peer pressure: against a literal port of the reference algorithm ---

def reference_peer_pressure(a:np.ndarray, patience:int=10, max_iter:int=100) -> np.ndarray:
    "altaris/lcc's peer pressure as described, with dense matrices and loops (no shortcut at fixed points)."
    n, total = len(a), a.sum()
    def conductance(labels):
        weighted, volumes = 0.0, 0.0
        for c in np.unique(labels):
            inside = labels == c
            vol, cut = a[inside].sum(), a[np.ix_(inside, ~inside)].sum()
            smaller = min(vol, total - vol)
            weighted += vol * (cut / smaller if smaller > 0 else 0.0); volumes += vol
        return weighted / volumes if volumes > 0 else 0.0
    labels = np.arange(n)
    best, best_conductance, without_improvement = labels, conductance(labels), 0
    for _ in range(max_iter):
        votes = a @ np.eye(n)[labels]                          # A·B, B one-hot membership (columns = labels)
        labels = np.where(votes.max(1) > 0, votes.argmax(1), labels)   # argmax: ties to the smallest label
        current = conductance(labels)
        if current < best_conductance: best, best_conductance, without_improvement = labels, current, 0
        else: without_improvement += 1
        if without_improvement >= patience: break
    return np.unique(best, return_inverse=True)[1]


def _fixed_graphs():
    x, _ = toy_blobs(150, k=3, dim=4, std=1.5, seed=7)
    knn = clustering.sparse_adjacency(clustering.as_igraph(clustering.knn_graph(x, 4))).toarray()
    rng = np.random.default_rng(8)
    weighted = np.triu((rng.random((60, 60)) < 0.08) * rng.integers(1, 4, (60, 60)).astype(float), 1)
    return {"knn": knn, "weighted": weighted + weighted.T}


@pytest.mark.parametrize("name", ["knn", "weighted"])
def test_peer_pressure_equals_reference_port(name):
    a = _fixed_graphs()[name]
    expected = reference_peer_pressure(a)
    assert 1 < expected.max() + 1 < len(a)                     # a non-trivial partition
    np.testing.assert_array_equal(clustering.peer_pressure(sp.csr_matrix(a)), expected)
    np.testing.assert_array_equal(clustering.community_labels(sp.csr_matrix(a), method="peer_pressure"),
                                  clustering.labels_by_size(expected))
    np.testing.assert_array_equal(clustering.peer_pressure(sp.csr_matrix(a), patience=2, max_iter=5),
                                  reference_peer_pressure(a, patience=2, max_iter=5))


def test_label_propagation_is_igraphs():
    graph = clustering.knn_graph(toy_blobs(300, k=3, dim=5, std=1.0)[0], 5)
    with clustering.igraph_seed(3):
        expected = clustering.as_igraph(graph).community_label_propagation().membership
    np.testing.assert_array_equal(clustering.community_labels(graph, method="label_propagation", seed=3),
                                  clustering.labels_by_size(expected))

def test_lcc_offers_every_community_method():
    "LCC's light config lists the same community methods as lcc_nb.clustering (it cannot import it)."
    from lcc_nb.clustering import COMMUNITY_METHODS
    from lcc_nb.lcc_config import CLUSTERING_METHODS
    assert tuple(CLUSTERING_METHODS) == tuple(COMMUNITY_METHODS)
