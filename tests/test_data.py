"""Load every torchvision / folder preset of `lcc_nb.data` from tiny fixtures written in the real on-disk formats (no network)."""
import bz2, gzip, pickle, struct, sys, types
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from lcc_nb.core import ChoiceError, LccError
from lcc_nb.data import (DATASET_PRESETS, SYSTEM_DATASETS, PseudoLabelled, TwoViews, WithIndex, fetch_dataset, get_dataset,
                         get_transform, simclr_transform)

RNG = np.random.default_rng(0)


def images_u8(n, *shape):
    return RNG.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def write_idx(path, array, gz=False):
    "An idx file (MNIST format): magic 0x0000 08 <ndim>, big-endian int32 dims, uint8 data."
    data = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz: path = path.with_name(path.name + ".gz")
    (gzip.open if gz else open)(path, "wb").write(data)


def write_pickle(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f: pickle.dump(obj, f, protocol=2)


def write_image(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


# ---------------------------------------------------------------- MNIST family

@pytest.mark.parametrize("name,folder,gz", [("mnist", "MNIST", False), ("fashion_mnist", "FashionMNIST", True), ("kmnist", "KMNIST", False)])
def test_mnist_family(tmp_path, name, folder, gz):
    raw = tmp_path / folder / "raw"
    data = {"train": (images_u8(5, 28, 28), np.array([0, 1, 2, 9, 1], np.uint8)), "t10k": (images_u8(3, 28, 28), np.array([3, 3, 7], np.uint8))}
    for prefix, (x, y) in data.items():
        write_idx(raw / f"{prefix}-images-idx3-ubyte", x, gz)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", y, gz)
    train = get_dataset(name, root=tmp_path)
    assert len(train) == 5 and train.targets.tolist() == [0, 1, 2, 9, 1] and train.targets.dtype == np.int64
    x, y = train[3]
    assert x.shape == (1, 28, 28) and y == 9
    assert torch.allclose(x[0], torch.from_numpy(data["train"][0][3]).float() / 255)
    assert (train.image_size, train.channels, len(train.classes)) == (28, 1, 10)
    both = get_dataset(name, "train+test", root=tmp_path)
    assert len(both) == 8 and both.targets.tolist() == [0, 1, 2, 9, 1, 3, 3, 7] and both[7][1] == 7


def test_missing_dataset_says_where_and_what_to_do(tmp_path):
    with pytest.raises(LccError, match="not found under root") as e: get_dataset("mnist", root=tmp_path)
    assert "download=True" in str(e.value) and "MNIST/raw" in str(e.value)
    with pytest.raises(LccError, match="imagenet10/{train,test}"): get_dataset("imagenet10", "test", root=tmp_path)
    with pytest.raises(LccError, match="download=True"): get_dataset("svhn", root=tmp_path)


def test_default_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LCC_NB_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(LccError, match="elsewhere"): get_dataset("cifar10")


def test_unknown_names():
    with pytest.raises(ChoiceError, match="Did you mean 'cifar10'"): get_dataset("cifar-10")
    with pytest.raises(ChoiceError, match="'train', 'test', 'unlabeled'"): get_dataset("stl10", "val")
    assert set(DATASET_PRESETS) >= {"digits", "shapes", "mnist", "fashion_mnist", "kmnist", "usps", "cifar10", "cifar100",
                                    "cifar100-20", "stl10", "svhn", "gtsrb", "imagenet10", "tiny-imagenet"}


# ---------------------------------------------------------------- USPS

def test_usps(tmp_path):
    def write(path, x, y):
        lines = [f"{label} " + " ".join(f"{j + 1}:{v:.6f}" for j, v in enumerate(img.ravel())) for img, label in zip(x, y)]
        path.write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))
    x = RNG.uniform(-1, 1, size=(4, 16, 16))
    write(tmp_path / "usps.bz2", x, [1, 10, 3, 3])
    write(tmp_path / "usps.t.bz2", x[:2], [2, 5])
    ds = get_dataset("usps", root=tmp_path)
    assert len(ds) == 4 and ds.targets.tolist() == [0, 9, 2, 2]
    img, y = ds[1]
    assert img.shape == (1, 16, 16) and y == 9
    assert np.allclose(img[0].numpy(), ((x[1] + 1) / 2 * 255).astype(np.uint8) / 255, atol=1e-6)
    assert get_dataset("usps", "test", root=tmp_path).targets.tolist() == [1, 4]


# ---------------------------------------------------------------- CIFAR

def write_cifar10(root):
    folder, x = root / "cifar-10-batches-py", images_u8(12, 3072)
    for b in range(5): write_pickle(folder / f"data_batch_{b + 1}", {"data": x[2 * b:2 * b + 2], "labels": [b, 9 - b]})
    write_pickle(folder / "test_batch", {"data": x[10:], "labels": [4, 5]})
    write_pickle(folder / "batches.meta", {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]})
    return x


def test_cifar10(tmp_path):
    x = write_cifar10(tmp_path)
    train = get_dataset("cifar10", root=tmp_path)
    assert len(train) == 10 and train.targets.tolist() == [0, 9, 1, 8, 2, 7, 3, 6, 4, 5]
    img, y = train[2]
    assert img.shape == (3, 32, 32) and y == 1 and train.classes[9] == "truck"
    assert torch.allclose(img, torch.from_numpy(x[2].reshape(3, 32, 32)).float() / 255)
    both = get_dataset("cifar10", "train+test", root=tmp_path)
    assert len(both) == 12 and both.targets[-2:].tolist() == [4, 5]
    copy = pickle.loads(pickle.dumps(WithIndex(both)))   # what DataLoader workers started by "spawn" receive
    assert torch.equal(copy[11][0], both[11][0]) and copy[11][2] == 11


def test_cifar100_and_its_20_superclasses(tmp_path):
    folder, fine = tmp_path / "cifar-100-python", [0, 99, 4, 30, 8]
    coarse = [4, 13, 0, 0, 18]   # apple, worm, beaver, dolphin, bicycle in the official release
    write_pickle(folder / "train", {"data": images_u8(5, 3072), "fine_labels": fine, "coarse_labels": coarse})
    write_pickle(folder / "test", {"data": images_u8(2, 3072), "fine_labels": [1, 2], "coarse_labels": [1, 14]})
    write_pickle(folder / "meta", {"fine_label_names": [f"class{i}" for i in range(100)],
                                   "coarse_label_names": [f"super{i}" for i in range(20)]})
    ds100 = get_dataset("cifar100", root=tmp_path)
    assert ds100.targets.tolist() == fine and len(ds100.classes) == 100
    ds20 = get_dataset("cifar100-20", root=tmp_path)
    assert ds20.targets.tolist() == coarse and ds20.fine_targets.tolist() == fine
    assert len(ds20.classes) == 20 and ds20.classes[13] == "non-insect_invertebrates" and ds20[1][1] == 13
    assert get_dataset("cifar100-20", "test", root=tmp_path).targets.tolist() == [1, 14]
    assert get_dataset("cifar100-20", "train+test", root=tmp_path).fine_targets.tolist() == fine + [1, 2]


# ---------------------------------------------------------------- SVHN, STL-10

def test_svhn(tmp_path):
    x = images_u8(4, 32, 32, 3)
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": np.transpose(x, (1, 2, 3, 0)), "y": np.array([[10], [1], [5], [10]], np.uint8)})
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": np.transpose(x[:1], (1, 2, 3, 0)), "y": np.array([[3]], np.uint8)})
    ds = get_dataset("svhn", root=tmp_path)
    assert ds.targets.tolist() == [0, 1, 5, 0]
    img, y = ds[2]
    assert img.shape == (3, 32, 32) and y == 5
    assert torch.allclose(img, torch.from_numpy(x[2]).permute(2, 0, 1).float() / 255)
    assert len(get_dataset("svhn", "train+test", root=tmp_path)) == 5
    with pytest.raises(LccError, match="extra_32x32.mat"): get_dataset("svhn", "extra", root=tmp_path)


def test_stl10(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    x = images_u8(3, 96, 96, 3)   # (N, H, W, C) as the images should come out
    (folder / "train_X.bin").write_bytes(np.transpose(x, (0, 3, 2, 1)).tobytes())   # the file stores C, W, H (column-major)
    (folder / "train_y.bin").write_bytes(np.array([1, 10, 4], np.uint8).tobytes())
    (folder / "test_X.bin").write_bytes(np.transpose(x[:2], (0, 3, 2, 1)).tobytes())
    (folder / "test_y.bin").write_bytes(np.array([2, 2], np.uint8).tobytes())
    (folder / "unlabeled_X.bin").write_bytes(np.transpose(x[:2], (0, 3, 2, 1)).tobytes())
    (folder / "class_names.txt").write_text("\n".join(["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]))
    train = get_dataset("stl10", root=tmp_path)
    assert train.targets.tolist() == [0, 9, 3] and train.classes[9] == "truck"
    img, y = train[1]
    assert img.shape == (3, 96, 96) and y == 9
    assert torch.allclose(img, torch.from_numpy(x[1]).permute(2, 0, 1).float() / 255)
    assert get_dataset("stl10", "unlabeled", root=tmp_path).targets.tolist() == [-1, -1]
    both = get_dataset("stl10", "train+unlabeled", root=tmp_path)
    assert both.targets.tolist() == [0, 9, 3, -1, -1] and both[4][1] == -1
    assert get_dataset("stl10", "test", root=tmp_path).targets.tolist() == [1, 1]


# ---------------------------------------------------------------- GTSRB and folders

def test_gtsrb(tmp_path):
    base = tmp_path / "gtsrb"
    for cls, n in ((0, 2), (5, 1)):
        for k in range(n): write_image(base / f"GTSRB/Training/{cls:05d}/00000_{k:05d}.ppm", images_u8(1, 30 + k, 31, 3)[0])
    for k in range(2): write_image(base / f"GTSRB/Final_Test/Images/{k:05d}.ppm", images_u8(1, 40, 35, 3)[0])
    (base / "GT-final_test.csv").write_text("Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"
                                            "00000.ppm;35;40;5;5;30;35;42\n00001.ppm;35;40;5;5;30;35;7\n")
    train = get_dataset("gtsrb", root=tmp_path)
    assert sorted(train.targets.tolist()) == [0, 0, 5] and train[2][1] == train.targets[2]   # folder 00005 is class 5
    assert train[0][0].shape == train[2][0].shape == (3, 32, 32) and len(train.classes) == 43   # mixed sizes: resized by default
    test = get_dataset("gtsrb", "test", root=tmp_path, transform=get_transform(dataset="gtsrb"))
    assert test.targets.tolist() == [42, 7] and test[0][0].shape == (3, 32, 32)


def test_imagenet10(tmp_path):
    for split, n in (("train", 2), ("test", 1)):
        for cls in ("n01", "n02"):
            for k in range(n): write_image(tmp_path / f"imagenet10/{split}/{cls}/{k}.png", images_u8(1, 20, 24, 3)[0])
    ds = get_dataset("imagenet10", root=tmp_path)
    assert ds.targets.tolist() == [0, 0, 1, 1] and ds.classes == ["n01", "n02"] and ds[0][0].shape == (3, 224, 224)
    both = get_dataset("imagenet10", "train+test", root=tmp_path, transform=get_transform(dataset="imagenet10", image_size=16))
    assert len(both) == 6 and both[5][0].shape == (3, 16, 16) and both[5][1] == 1


def test_tiny_imagenet(tmp_path):
    folder = tmp_path / "tiny-imagenet-200"
    for wnid in ("n02", "n01"):
        for k in range(2): write_image(folder / f"train/{wnid}/images/{wnid}_{k}.JPEG", images_u8(1, 64, 64, 3)[0])
        (folder / f"train/{wnid}/{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t10\t10\n")
    for k in range(3): write_image(folder / f"val/images/val_{k}.JPEG", images_u8(1, 64, 64, 3)[0])
    (folder / "val/val_annotations.txt").write_text("val_0.JPEG\tn02\t0\t0\t5\t5\nval_1.JPEG\tn01\t1\t1\t6\t6\nval_2.JPEG\tn02\t0\t0\t5\t5\n")
    train = get_dataset("tiny-imagenet", root=tmp_path)
    assert train.classes == ["n01", "n02"] and train.targets.tolist() == [0, 0, 1, 1] and train[3][0].shape == (3, 64, 64)
    val = get_dataset("tiny-imagenet", "val", root=tmp_path)
    assert val.targets.tolist() == [1, 0, 1] and val[1][0].shape == (3, 64, 64) and val[1][1] == 0
    assert len(get_dataset("tiny-imagenet", "train+val", root=tmp_path)) == 7
    with pytest.raises(LccError, match="val_annotations.txt"): get_dataset("tiny-imagenet", "val", root=tmp_path / "nothing")


# ---------------------------------------------------------------- Hugging Face

def test_hf_without_datasets_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)   # makes `import datasets` fail even where it is installed
    with pytest.raises(LccError, match="pip install datasets"): get_dataset("hf:uoft-cs/cifar10")


class FakeHFDataset:
    "The part of a `datasets.Dataset` that lcc_nb uses: columns, features, row and column access."
    def __init__(self, columns, names):
        self.columns, self.column_names = columns, list(columns)
        self.features = {"img": object(), "fine": types.SimpleNamespace(names=names)}
    def __len__(self): return len(self.columns["fine"])
    def __getitem__(self, key):
        return self.columns[key] if isinstance(key, str) else {k: v[key] for k, v in self.columns.items()}


def test_hf_dataset_through_the_datasets_api(monkeypatch):
    calls = []
    def load_dataset(name, config, split, cache_dir, download_config):
        calls.append((name, config, split, download_config))
        images = [Image.fromarray(a) for a in images_u8(3, 10, 12, 3)]
        return FakeHFDataset({"img": images, "fine": [2, 0, 1]}, ["a", "b", "c"])
    fake = types.ModuleType("datasets")
    fake.load_dataset, fake.DownloadConfig = load_dataset, lambda **kw: kw
    monkeypatch.setitem(sys.modules, "datasets", fake)
    ds = get_dataset("hf:someone/toy", "test", label_key="fine")
    assert calls == [("someone/toy", None, "test", {"local_files_only": True})]
    assert ds.targets.tolist() == [2, 0, 1] and ds.classes == ["a", "b", "c"] and ds[0][0].shape == (3, 10, 12)
    with pytest.raises(ChoiceError, match="'img', 'fine'"): get_dataset("hf:someone/toy", label_key="label")
    with pytest.raises(ChoiceError, match="Unknown label column"): get_dataset("hf:someone/toy")


# ---------------------------------------------------------------- wrappers in a DataLoader

def test_wrappers_in_a_dataloader():
    ds = WithIndex(PseudoLabelled(get_dataset("shapes", "test", transform=TwoViews(simclr_transform(16))), np.arange(600) % 5))
    (v1, v2), y, i = next(iter(torch.utils.data.DataLoader(ds, batch_size=8, shuffle=False)))
    assert v1.shape == v2.shape == (8, 3, 16, 16) and y.tolist() == [0, 1, 2, 3, 4, 0, 1, 2] and i.tolist() == list(range(8))
    assert ds.true_targets.shape == (600,) and ds.targets.max() == 4 and ds.fine_classes[0] == "red circle"


def test_hf_unknown_option():
    with pytest.raises(ChoiceError, match="Unknown option of dataset 'hf:x' 'colour'"): get_dataset("hf:x", colour="red")


# ---------------------------------------------------------------- system packages and the model's own preprocessing

def _debian_layout(folder):
    "The four idx .gz files of dataset-fashion-mnist, tiny, in `folder` (as /usr/share/datasets/fashion-mnist holds them)."
    data = {"train": (images_u8(4, 28, 28), np.array([0, 1, 2, 9], np.uint8)), "t10k": (images_u8(2, 28, 28), np.array([5, 7], np.uint8))}
    for prefix, (x, y) in data.items():
        write_idx(folder / f"{prefix}-images-idx3-ubyte", x, gz=True)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", y, gz=True)
    return data


@pytest.mark.parametrize("copy", [False, True])
def test_fetch_dataset_lays_out_the_debian_files(tmp_path, copy):
    source, root = tmp_path / "usr-share", tmp_path / "data"
    data = _debian_layout(source)
    raw = fetch_dataset("fashion_mnist", root, source=source, copy=copy)
    assert raw == root / "FashionMNIST" / "raw" and sorted(p.name for p in raw.iterdir()) == sorted(SYSTEM_DATASETS["fashion_mnist"].files)
    assert all(p.is_symlink() != copy for p in raw.iterdir())
    test = get_dataset("fashion_mnist", "test", root=root)
    assert test.targets.tolist() == [5, 7] and np.array_equal(np.asarray(test.images[1]), data["t10k"][0][1])
    assert fetch_dataset("fashion_mnist", root, source=source, copy=copy) == raw   # idempotent, with the unpacked files beside


def test_fetch_dataset_repairs_links_and_names_the_package(tmp_path):
    old, new, root = tmp_path / "old", tmp_path / "new", tmp_path / "data"
    _debian_layout(old); fetch_dataset("fashion_mnist", root, source=old)
    old.rename(new)                                                   # the package's files moved: the links dangle
    fetch_dataset("fashion_mnist", root, source=new)
    assert len(get_dataset("fashion_mnist", root=root)) == 4
    with pytest.raises(LccError, match="apt-get install dataset-fashion-mnist"): fetch_dataset("fashion_mnist", root, source=tmp_path / "none")
    with pytest.raises(ChoiceError, match="fashion_mnist"): fetch_dataset("mnist", root)


def test_get_dataset_uses_a_pretrained_models_preprocessing():
    from dataclasses import replace
    from types import SimpleNamespace
    from lcc_nb.preprocessing import IMAGENET_DATA_CONFIG
    config = replace(IMAGENET_DATA_CONFIG, input_size=(3, 16, 16), pretrained=True)
    x, _ = get_dataset("digits", model=SimpleNamespace(data_config=config))[0]
    plain, _ = get_dataset("digits")[0]
    assert x.shape == (3, 16, 16) and plain.shape == (1, 8, 8)
    corner = (plain[0, 0, 0] - torch.tensor(config.mean)) / torch.tensor(config.std)   # a background pixel, normalised per channel
    torch.testing.assert_close(x[:, 0, 0], corner, atol=0.02, rtol=0)
    untrained = SimpleNamespace(data_config=replace(config, pretrained=False))
    assert get_dataset("digits", model=untrained)[0][0].shape == (1, 8, 8)
    assert get_dataset("digits", model=SimpleNamespace(data_config=config), transform=get_transform(4))[0][0].shape == (1, 4, 4)
