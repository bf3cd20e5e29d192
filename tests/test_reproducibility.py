"""Reproducibility: each method's CLI run twice with the same --seed gives identical weights and metrics (its own file so
that pytest-xdist's --dist loadfile spreads these slow runs over the workers)."""
import json, os, subprocess, sys

import pytest
import torch

from lcc_nb.core import list_checkpoints

LCC_NB = os.path.join(os.path.dirname(sys.executable), "lcc_nb")
TINY_VIT = '{"patch_size": 4, "depth": 2, "embed_dim": 16, "num_heads": 2}'
TINY_RUNS = {   # each method on digits, seconds on a CPU; {out} is the output folder
    "train": ["lcc/small_cnn", "digits", "{out}", "--lcc-submodules", "fc1", "--epochs", "2", "--batch-size", "128",
              "--optimizer", "adam", "--lr", "3e-3", "--no-progress", "--seed", "3"],
    "deepcluster": ["--model", "lcc/small_cnn", "--k", "5", "--pca-dim", "8", "--epochs", "1", "--batch-size", "128",
                    "--no-progress", "--out-dir", "{out}", "--seed", "3"],
    "cd": ["--model", "lcc/feedforward", "--feature-num", "8", "--epochs", "1", "--batch-size", "256", "--eval-every", "1",
           "--eval-subset", "100", "--no-progress", "--out-dir", "{out}", "--seed", "3"],
    "llb": ["--backbone", "timm/vit_tiny_patch16_224", "--backbone_config", f"patch_size=4", "--backbone_config", "depth=2",
            "--backbone_config", "embed_dim=16", "--backbone_config", "num_heads=2", "--image_size", "8", "--crop_pct", "1",
            "--in_chans", "1", "--target_layer", "1", "--object_size", "8", "--num_nvit_layers", "2", "--no-randaugment",
            "--epochs", "1", "-b", "64", "--opt", "Adam", "--lr_scheduler", "CosineAnnealingLR", "--no-progress",
            "--save_dir", "{out}", "--seed", "3", "--allow_random_backbone"],
}

def _numbers(results:dict) -> dict:
    "The metrics of a results.json, without timings and paths (which differ between two identical runs)."
    def keep(d): return {k: v for k, v in d.items() if "time" not in k and "checkpoint" not in k and not isinstance(v, (dict, list))}
    return {part: keep(results.get(part) or {}) for part in ("final", "best", "test", "method")}

def _run(command:str, out) -> tuple[dict, dict]:
    args = [a.format(out=out) for a in TINY_RUNS[command]]
    proc = subprocess.run([LCC_NB, command, *args], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((out/"results.json").read_text())
    weights = torch.load(list_checkpoints(out/"checkpoints")[-1], weights_only=True)["model"]
    return results, weights

@pytest.mark.parametrize("command", list(TINY_RUNS))
def test_same_seed_same_run(tmp_path, command):
    "Each method's CLI run twice with the same --seed gives identical weights and metrics."
    (first, w1), (second, w2) = _run(command, tmp_path/"a"), _run(command, tmp_path/"b")
    assert _numbers(first) == _numbers(second)
    assert first["test"] or first["method"], "the run reported no metrics"
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    assert first["config"]["train"]["seed"] == 3 and first["method"]["name"]
    assert (tmp_path/"a"/"results.json").stat().st_mode & 0o044, "results.json must be readable by others (not 0600)"
