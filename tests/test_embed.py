"UMAP of digits separates the classes (slow in a notebook because numba compiles UMAP on first use)."
import numpy as np
from sklearn.datasets import load_digits

from lcc_nb.embed import embed_2d, knn_accuracy_2d


def test_umap_digits_separates_classes():
    digits = load_digits()
    coords = embed_2d(digits.data.astype(np.float32), "umap", seed=0)
    assert coords.shape == (1797, 2)
    assert knn_accuracy_2d(coords, digits.target) >= 0.9  # measured 0.981
