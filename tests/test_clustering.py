"Clustering without faiss: the scikit-learn fallbacks give the same answers as the faiss paths."
import numpy as np
import pytest

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
