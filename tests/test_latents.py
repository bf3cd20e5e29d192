"Tests of lcc_nb.latents beyond the notebook: hooks on every model family, index bookkeeping, streaming to disk."
import tracemalloc

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lcc_nb.core import ChoiceError, LccError
from lcc_nb.latents import Latents, LatentHooks, extract_latents, feature_dim
from lcc_nb.models import get_model

TINY_VIT = dict(image_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=8)


class Indexed(Dataset):
    "(x, y, index) samples, as the training loop's WithIndex gives them."
    def __init__(self, ds): self.ds = ds
    def __len__(self): return len(self.ds)
    def __getitem__(self, i): return (*self.ds[i], i)


def _images(n, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, *shape, generator=g), torch.arange(n) % 3)


@pytest.mark.parametrize("name, kwargs, submodule, reduce, shape, dim", [
    ("lcc/small_cnn", {}, "fc1", "flatten", (1, 8, 8), 128),
    ("lcc/small_cnn", {}, "features", "mean", (1, 8, 8), 64),
    ("resnet18", {}, "layer4", "mean", (3, 32, 32), 512),
    ("resnet18", {}, "avgpool", "flatten", (3, 32, 32), 512),
    ("timm/resnet10t", {}, "global_pool", "flatten", (3, 32, 32), 512),
    ("timm/vit_tiny_patch16_224", {"image_size": 32, "depth": 2}, "blocks.1", "cls", (3, 32, 32), 192),
    ("hf/vit", TINY_VIT, "model.vit.layers.1", "cls", (3, 32, 32), 32),
    ("hf/vit", TINY_VIT, "model.vit", "mean", (3, 32, 32), 32),
    ("lcc/alexnet_bn", {"image_size": 32, "hidden": 16, "sobel": True}, "classifier", "flatten", (3, 32, 32), 16),
])
def test_hooks_capture_latents_with_gradient(name, kwargs, submodule, reduce, shape, dim):
    model = get_model(name, 3, **kwargs).train()
    with LatentHooks(model, submodule, reduce) as hooks:
        logits = model(torch.randn(4, *shape))
        z = hooks.latents[submodule]
        assert z.shape == (4, dim) and z.requires_grad
        (z.pow(2).mean() + logits.sum()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert feature_dim(model, submodule, shape, reduce) == dim


def test_hooks_hold_the_last_forward():
    model = get_model("lcc/small_cnn", 3)
    with LatentHooks(model, ["fc1", "fc2"]) as hooks:
        model(torch.randn(2, 1, 8, 8)); first = hooks.latents["fc1"]
        model(torch.randn(5, 1, 8, 8))
        assert hooks.latents["fc1"].shape == (5, 128) and first.shape == (2, 128)
        out = model(torch.zeros(1, 1, 8, 8))
        assert hooks.latents["fc2"] is out
    with pytest.raises(ChoiceError, match="Did you mean 'fc1'"): LatentHooks(model, ["fc_1"])
    with pytest.raises(ChoiceError, match="reduce"): LatentHooks(model, ["fc1"], reduce="max")


class _NoTensor(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Identity()
    def forward(self, x):
        self.inner("not a tensor")
        return x


def test_a_submodule_without_tensor_output_is_a_clear_error():
    model = _NoTensor()
    with LatentHooks(model, "inner"), pytest.raises(LccError, match="without a tensor"): model(torch.zeros(1))


def test_shuffled_loader_rows_land_at_their_absolute_index():
    ds = _images(37, (1, 8, 8))
    model = get_model("lcc/small_cnn", 3)
    ordered = extract_latents(model, ds, ["fc1", "features"], batch_size=8, progress=False, with_outputs=True)
    shuffled = DataLoader(Indexed(ds), batch_size=5, shuffle=True, generator=torch.Generator().manual_seed(3))
    again = extract_latents(model, shuffled, ["fc1", "features"], progress=False, with_outputs=True)
    np.testing.assert_array_equal(again.indices, np.arange(37))
    np.testing.assert_array_equal(again.targets, ds.tensors[1].numpy())
    for name in ("fc1", "features"): np.testing.assert_allclose(again[name], ordered[name], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(again.outputs, ordered.outputs, rtol=1e-5, atol=1e-6)
    with torch.no_grad(): direct = model.eval()(ds.tensors[0][[11]])
    np.testing.assert_allclose(again.outputs[11], direct[0].numpy(), rtol=1e-4, atol=1e-5)


def test_eval_mode_no_grad_and_mode_restored():
    model = get_model("lcc/small_cnn", 3).train()
    seen = []
    model.fc1.register_forward_hook(lambda m, a, out: seen.append((m.training, out.requires_grad)))
    extract_latents(model, _images(10, (1, 8, 8)), "fc1", progress=False)
    assert seen == [(False, False)] and model.training
    model.eval()
    extract_latents(model, _images(10, (1, 8, 8)), "fc1", progress=False)
    assert not model.training


def test_two_view_batches_use_the_first_view():
    ds = _images(12, (1, 8, 8))
    model = get_model("lcc/small_cnn", 3)
    views = [((x, x.flip(-1)), y, torch.arange(i, i + len(x))) for i, (x, y) in
             ((i, (ds.tensors[0][i:i+4], ds.tensors[1][i:i+4])) for i in range(0, 12, 4))]
    lat = extract_latents(model, views, "fc1", progress=False, num_samples=12)
    np.testing.assert_allclose(lat["fc1"], extract_latents(model, ds, "fc1", progress=False)["fc1"], rtol=1e-5, atol=1e-6)
    with pytest.raises(LccError, match="num_samples"): extract_latents(model, views, "fc1", progress=False)
    with pytest.raises(LccError, match="out of range"): extract_latents(model, views, "fc1", progress=False, num_samples=5)


def test_hf_vit_token_latents_extracted():
    model = get_model("hf/vit", 3, **TINY_VIT)
    lat = extract_latents(model, _images(6, (3, 32, 32)), ["model.vit.layers.0", "model.vit"], reduce={"model.vit.layers.0": "cls",
                          "model.vit": "mean"}, progress=False, with_outputs=True)
    assert lat["model.vit.layers.0"].shape == (6, 32) and lat["model.vit"].shape == (6, 32) and lat.outputs.shape == (6, 3)


def test_memmap_equals_in_memory_and_keeps_peak_memory_flat(tmp_path):
    n, d = 4000, 256
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, d))
    ds = TensorDataset(torch.randn(n, 1, 4, 4), torch.zeros(n, dtype=torch.long))
    def peak(**kw):
        tracemalloc.start()
        lat = extract_latents(model, ds, "1", batch_size=200, progress=False, **kw)
        _, top = tracemalloc.get_traced_memory(); tracemalloc.stop()
        return lat, top
    in_memory, mem_peak = peak()
    streamed, disk_peak = peak(memmap_dir=tmp_path)
    assert isinstance(streamed["1"], np.memmap) and not streamed["1"].flags.writeable
    np.testing.assert_array_equal(np.asarray(streamed["1"]), in_memory["1"])
    np.testing.assert_array_equal(np.load(tmp_path/"latents.1.npy"), in_memory["1"])
    assert mem_peak > n * d * 4 and disk_peak < n * d * 4 / 4, (mem_peak, disk_peak)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latents.1.npy", "targets.npy"]


def _gather_on_each_rank():
    "Per rank: (rank, targets, latents of fc1 or None) after gather_latents through a Trainer."
    from lcc_nb.distributed import all_gather_object
    from lcc_nb.latents import gather_latents
    from lcc_nb.train import TrainConfig, Trainer
    torch.manual_seed(0)
    trainer = Trainer(get_model("lcc/small_cnn", 3), _images(23, (1, 8, 8)), config=TrainConfig(epochs=0, progress=False))
    trainer.fit()
    got = gather_latents(trainer, _images(23, (1, 8, 8)), "fc1", batch_size=4, rows_per_round=5)
    return all_gather_object((trainer.rank, got.targets, None if got.latents is None else np.asarray(got["fc1"])))


def test_gather_latents_gives_rank0_every_row_and_the_others_none():
    from lcc_nb.distributed import launch
    torch.set_num_threads(1)
    (rank0, targets0, rows0), (rank1, targets1, rows1) = launch(_gather_on_each_rank, nprocs=2, backend="gloo", start_method="fork")
    torch.manual_seed(0)
    expected = extract_latents(get_model("lcc/small_cnn", 3), _images(23, (1, 8, 8)), "fc1", progress=False)
    assert (rank0, rank1) == (0, 1) and rows1 is None and rows0.shape == (23, 128)
    np.testing.assert_allclose(rows0, expected["fc1"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(targets0, expected.targets); np.testing.assert_array_equal(targets1, expected.targets)


def test_gather_latents_refuses_a_loader_that_loses_samples():
    from lcc_nb.latents import gather_latents
    from lcc_nb.train import Trainer

    class Lossy(Trainer):
        def eval_loader(self, dataset, shard=True, batch_size=None):
            return DataLoader(torch.utils.data.Subset(Indexed(dataset), range(len(dataset) - 1)), batch_size=4)
    trainer = Lossy(get_model("lcc/small_cnn", 3), _images(9, (1, 8, 8)))
    with pytest.raises(LccError, match="9 samples"): gather_latents(trainer, _images(9, (1, 8, 8)), "fc1")
