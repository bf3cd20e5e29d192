"""Contrastive Disentangling end to end on digits (CPU): measured NMI thresholds, LIME on a trained head, CLI + resume."""
import json

import numpy as np
import pytest
import torch

from lcc_nb.cd import cd_model, evaluate_cd, train_cd
from lcc_nb.cli import main
from lcc_nb.core import set_seed
from lcc_nb.explain import explain_feature_head, top_activating

# A small CD network (lcc/small_cnn, width 16, 16 heads), 8 epochs, Adam 3e-3, on all 1797 digits: ~20 s of CPU.
# Measured k-means NMI (untrained -> trained), seeds 42 / 0 / 7:
#   backbone  0.42 -> 0.69 / 0.63 -> 0.66 / 0.42 -> 0.73
#   heads     0.08 -> 0.51 / 0.15 -> 0.57 / 0.11 -> 0.46
# The heads' gain is robust (+0.34 or more); the backbone's depends on how good the random network already is (seed 0),
# so its absolute level is the main check. The test runs seed 42; thresholds keep ~0.1 of margin below it.
# (50 epochs of the full-width small_cnn with 32 heads reach 0.86 / 0.80, see nbs/13_cd.ipynb.)
SMALL = dict(dataset="digits", model="lcc/small_cnn", model_options={"width": 16, "hidden": 64}, feature_num=16,
             epochs=8, lr=3e-3, eval_every=0, seed=42, progress=False)

@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    return train_cd(**SMALL)

def test_nmi_rises_far_above_untrained(trained):
    set_seed(SMALL["seed"])
    untrained = cd_model(SMALL["model"], SMALL["feature_num"], in_chans=1, image_size=8, **SMALL["model_options"])
    before, after = evaluate_cd(untrained, trained.eval_data), trained.metrics
    assert before["backbone_class_nmi"] < 0.55 and before["feature_class_nmi"] < 0.2
    assert after["backbone_class_nmi"] > 0.6 and after["backbone_class_nmi"] > before["backbone_class_nmi"] + 0.15
    assert after["feature_class_nmi"] > 0.4 and after["feature_class_nmi"] > before["feature_class_nmi"] + 0.3

def test_lime_mask_of_a_trained_head_drives_it(trained):
    model, data = trained.model, trained.eval_data
    outputs = model.eval()(torch.stack([data[i][0] for i in range(len(data))])).detach()
    head = int(outputs.std(0).argmax())                     # the head that varies most over the dataset
    top = top_activating(model, data, head, threshold=0.5, n=3, progress=False)
    assert len(top.indices) == 3 and (top.values > 0.5).all()
    exp = explain_feature_head(model, data[int(top.indices[0])][0], head, num_samples=400, num_features=4)
    assert exp.n_segments == 16 and exp.mask.any()
    removed = torch.as_tensor(exp.remove_mask()[..., :1], dtype=torch.float32).permute(2, 0, 1)[None]
    with torch.no_grad(): after = float(model(removed)[0, head])
    assert after < exp.output - 0.05

def cli(capsys, *args):
    assert main(["cd", *args]) == 0
    out = capsys.readouterr().out
    return json.loads(out[out.index("{"):])

def test_cli_trains_and_reload_continues_past_the_planned_epochs(tmp_path, capsys):
    common = ["--dataset", "digits", "--model", "lcc/feedforward", "--feature-num", "8", "--batch-size", "256",
              "--eval-every", "1", "--eval-subset", "100", "--out-dir", str(tmp_path), "--quiet"]
    first = cli(capsys, *common, "--epochs", "1")
    assert first["epochs"] == 1 and 0 <= first["feature_class_nmi"] <= 1
    assert json.loads((tmp_path/"cd_metrics.json").read_text()) == {k: v for k, v in first.items() if k not in ("epochs", "step")}
    second = cli(capsys, *common, "--epochs", "2", "--reload")
    assert second["epochs"] == 2 and second["step"] == 2 * first["step"]

def test_cli_names_a_bad_dataset(capsys):
    with pytest.raises(SystemExit) as exit: main(["cd", "--dataset", "digitz"])
    assert exit.value.code == 2 and "Unknown dataset 'digitz'" in capsys.readouterr().err
