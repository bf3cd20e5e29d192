"Tests of lcc_nb.models beyond the notebook: every registered architecture, weight files, HF hub errors, the CLI."
import os, subprocess, sys

import pytest
import torch
from torch import nn

from lcc_nb.core import ChoiceError, CheckpointError, LccError, save_checkpoint
from lcc_nb.models import (DeepClusterNet, get_model, get_submodule, list_models, load_weights, model_tree,
                           replace_head, submodule_names)

TINY_VIT = dict(image_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=8)
TINY_HF_RESNET = dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")


def _same_outputs(a, b, x):
    a.eval(); b.eval()
    with torch.no_grad(): torch.testing.assert_close(a(x), b(x))


DEEPCLUSTER = [n for n in list_models() if n != "lcc/small_cnn"]


def test_registry_lists_the_deepcluster_architectures():
    assert DEEPCLUSTER == ["lcc/alexnet_bn", "lcc/feedforward", "lcc/resnet101", "lcc/resnet152", "lcc/resnet18",
                           "lcc/resnet34", "lcc/resnet50", "lcc/vgg16"]


FRONT_ENDS = [{}, {"sobel": True}, {"grayscale": True}]


@pytest.mark.parametrize("name, front", [(n, FRONT_ENDS[i % 3]) for i, n in enumerate(DEEPCLUSTER)])
def test_deepcluster_architectures_on_small_images(name, front):
    small = {"hidden": 16} if name in ("lcc/alexnet_bn", "lcc/vgg16") else {}
    net = get_model(name, 5, in_chans=3, image_size=8, **small, **front).eval()
    assert isinstance(net, DeepClusterNet)
    x = torch.randn(2, 3, 8, 8)
    assert net(x).shape == (2, 5)
    frozen = [p for p in net.front_end.parameters()]
    assert all(not p.requires_grad for p in frozen) and len(frozen) == (4 if front.get("sobel") else 2 if front else 0)
    assert net.remove_top_layer()(x).shape == (2, net.feature_dim)
    net.add_top_layer(7)
    assert net(x).shape == (2, 7) and net.top_layer.bias.abs().sum() == 0


def test_deepcluster_sizes_at_224_match_the_paper():
    assert get_model("lcc/alexnet_bn", 10, hidden=16).classifier[2].in_features == 256 * 6 * 6
    assert get_model("lcc/vgg16", 10, hidden=16).classifier[1].in_features == 512 * 7 * 7
    assert get_model("lcc/resnet50", 10, image_size=64).feature_dim == 2048


def test_sobel_front_end_is_not_trained():
    net = get_model("lcc/alexnet_bn", 3, in_chans=1, image_size=8, hidden=16, sobel=True)
    before = {k: v.clone() for k, v in net.front_end.state_dict().items()}
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    net(torch.randn(4, 1, 8, 8)).sum().backward(); opt.step()
    for k, v in net.front_end.state_dict().items(): torch.testing.assert_close(v, before[k])


def test_small_cnn_on_32x32_colour_images():
    net = get_model("lcc/small_cnn", 10, in_chans=3)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert {"features", "fc1", "fc2"} <= set(submodule_names(net))


def test_timm_state_dict_in_safetensors_loads_offline(tmp_path):
    from safetensors.torch import save_file
    src = get_model("timm/resnet10t", 4, in_chans=1)
    save_file(src.state_dict(), str(tmp_path/"w.safetensors"))
    _same_outputs(src, get_model("timm/resnet10t", 4, pretrained=tmp_path/"w.safetensors", in_chans=1), torch.randn(2, 1, 32, 32))


def test_torchvision_weights_for_other_classes_get_a_fresh_head(tmp_path):
    src = get_model("resnet18", 1000)
    torch.save(src.state_dict(), tmp_path/"imagenet.pth")
    net = get_model("resnet18", 5, pretrained=tmp_path/"imagenet.pth", head_name="fc")
    assert net.fc.out_features == 5
    torch.testing.assert_close(net.layer4[1].conv2.weight, src.layer4[1].conv2.weight)
    assert not torch.equal(net.fc.weight, src.fc.weight[:5])


def test_lcc_checkpoint_and_prefixed_state_dicts_load(tmp_path):
    src = get_model("lcc/small_cnn", 10)
    save_checkpoint({"model": src.state_dict(), "step": 3, "epoch": 1}, tmp_path)
    x = torch.randn(2, 1, 8, 8)
    _same_outputs(src, get_model("lcc/small_cnn", 10, pretrained=tmp_path/"step-000000003.pt"), x)
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, tmp_path/"ddp.pt")
    _same_outputs(src, get_model("lcc/small_cnn", 10, pretrained=tmp_path/"ddp.pt"), x)


def test_bad_weight_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"): get_model("lcc/small_cnn", 10, pretrained=tmp_path/"no.pt")
    torch.save(get_model("lcc/small_cnn", 10, width=8).state_dict(), tmp_path/"narrow.pt")
    with pytest.raises(CheckpointError, match="shape mismatches"): get_model("lcc/small_cnn", 10, pretrained=tmp_path/"narrow.pt")
    with pytest.raises(LccError, match="no downloadable weights"): get_model("lcc/small_cnn", 10, pretrained=True)


@pytest.mark.parametrize("model_type, config, shape", [("vit", TINY_VIT, (2, 3, 32, 32)), ("resnet", TINY_HF_RESNET, (2, 3, 16, 16))])
def test_hf_save_pretrained_directory_loads_offline(tmp_path, model_type, config, shape):
    src = get_model(f"hf/{model_type}", 6, **config)
    src.model.save_pretrained(tmp_path/model_type)
    again = get_model(f"hf/{model_type}", 6, pretrained=tmp_path/model_type)
    _same_outputs(src, again, torch.randn(*shape))
    fewer = get_model(f"hf/{model_type}", 3, pretrained=tmp_path/model_type)   # a resized head loads too
    assert fewer(torch.randn(*shape)).shape == (2, 3)


def test_hf_overrides_reach_the_config():
    net = get_model("hf/vit", 4, in_chans=1, **TINY_VIT)
    assert (net.model.config.num_channels, net.model.config.hidden_size, net.model.config.num_labels) == (1, 32, 4)
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 4)
    assert "model.vit.embeddings" in submodule_names(net)


def test_hf_hub_model_offline_and_not_cached_is_a_clear_error(monkeypatch, tmp_path):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(LccError, match="not in the local cache"): get_model("hf/no-org/no-such-model", 3)
    with pytest.raises(LccError, match="without weights"): get_model("hf/vit", 3, pretrained=True)


def test_unknown_names_suggest_close_ones():
    with pytest.raises(ChoiceError, match="Did you mean 'lcc/vgg16'"): get_model("lcc/vgg61", 3)
    with pytest.raises(ChoiceError, match="hf/<model_type>"): get_model("not-a-model", 3)
    with pytest.raises(ChoiceError, match="Did you mean 'vit'"): get_model("hf/vitt", 3)
    with pytest.raises(ChoiceError, match="Did you mean 'resnet18'"): get_model("timm/resnet81", 3)
    with pytest.raises(ChoiceError, match="option of lcc/alexnet_bn"): get_model("lcc/alexnet_bn", 3, widht=3)
    with pytest.raises(ChoiceError, match="Did you mean 'layer4'"): get_submodule(get_model("resnet18", 3), "layer_4")


class _TupleOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
    def forward(self, x): return {"features": x, "scores": self.fc(x)}


def test_logit_key_and_replace_head():
    from lcc_nb.models import LogitsOf
    net = LogitsOf(_TupleOut(), "scores")
    assert net(torch.randn(2, 4)).shape == (2, 3)
    with pytest.raises(ChoiceError, match="'scores'"): LogitsOf(_TupleOut(), "logit")(torch.randn(2, 4))
    replace_head(net, 7)
    assert net.model.fc.out_features == 7 and net(torch.randn(2, 4)).shape == (2, 7)
    with pytest.raises(LccError, match="not nn.Linear"): replace_head(get_model("lcc/small_cnn", 3), 5, head_name="features.0")


def test_model_tree_shows_types_params_and_shapes():
    tree = model_tree(get_model("hf/vit", 4, **TINY_VIT), depth=3, input_shape=(3, 32, 32))
    assert "model.vit  ViTModel" in tree and "-> (2, 17, 32)" in tree and "-> (2, 4)" in tree


def test_cli_pretty_print():
    exe = os.path.join(os.path.dirname(sys.executable), "lcc_nb")
    res = subprocess.run([exe, "pretty-print", "lcc/small_cnn", "--depth", "1", "--num-classes", "3", "--input-shape", "1,8,8"],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    assert "fc2  Linear" in res.stdout and "-> (2, 3)" in res.stdout


def test_cli_unknown_model_exits_2(capsys):
    from lcc_nb.cli import main
    with pytest.raises(SystemExit) as e: main(["pretty-print", "lcc/smal_cnn"])
    assert e.value.code == 2 and "Did you mean 'lcc/small_cnn'" in capsys.readouterr().err


# ---------------------------------------------------------------- the model's own preprocessing (`model.data_config`)

def test_timm_data_config_is_timms_own():
    import timm.data
    net = get_model("timm/resnet18", 10)
    theirs = timm.data.resolve_model_data_config(net)
    ours = net.data_config
    assert (ours.mean, ours.std, ours.input_size, ours.interpolation, ours.crop_pct) == \
           (theirs["mean"], theirs["std"], theirs["input_size"], theirs["interpolation"], theirs["crop_pct"])
    assert not ours.pretrained and ours.source == "timm resnet18.a1_in1k"


def test_torchvision_data_config_is_the_weights_transforms():
    import torchvision
    net = get_model("resnet18", 10)
    theirs = torchvision.models.ResNet18_Weights.DEFAULT.transforms()
    ours = net.data_config
    assert ours.mean == tuple(theirs.mean) and ours.std == tuple(theirs.std) and ours.input_size == (3, *theirs.crop_size * 2)
    assert ours.interpolation == theirs.interpolation.value and ours.crop_pct == theirs.crop_size[0] / theirs.resize_size[0]


def test_hf_data_config_is_the_processor_defaults_offline():
    from transformers import ViTImageProcessor
    theirs = ViTImageProcessor()
    ours = get_model("hf/vit", 10, **TINY_VIT).data_config
    assert ours.mean == tuple(theirs.image_mean) and ours.std == tuple(theirs.image_std)
    assert ours.input_size == (3, 32, 32) and ours.crop_mode == "squash" and "defaults" in ours.source   # sized by config.image_size
    assert get_model("hf/resnet", 3, **TINY_HF_RESNET).data_config.crop_mode in ("center", "squash")   # ConvNeXt's processor


def test_a_local_weights_file_gets_the_models_normalisation(tmp_path):
    from lcc_nb.data import get_dataset
    from lcc_nb.preprocessing import set_transform, transform_for
    torch.save(get_model("mobilenet_v2", 1000).state_dict(), tmp_path / "mobilenet_v2-b0353104.pth")   # named as torchvision's V1 file
    net = get_model("mobilenet_v2", 10, pretrained=tmp_path / "mobilenet_v2-b0353104.pth", image_size=32)
    cfg = net.data_config
    assert cfg.pretrained and cfg.input_size == (3, 32, 32) and cfg.source == "torchvision MobileNet_V2_Weights.IMAGENET1K_V1"
    x, _ = get_dataset("digits", model=net)[0]
    assert x.shape == (3, 32, 32) and x.min() < -2                     # black background: (0 - 0.485) / 0.229
    assert net.eval()(x[None]).shape == (1, 10)
    train = get_dataset("digits")
    set_transform(transform_for(net), train)
    assert train[0][0].shape == (3, 32, 32)
    assert transform_for(get_model("mobilenet_v2", 10)) is None        # random weights: the dataset's own tensors
