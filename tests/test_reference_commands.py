"""The original repositories' README commands run through the lcc_nb CLI (its own file so that pytest-xdist's
--dist loadfile spreads these slow runs over the workers)."""
import json, os, subprocess, sys

import pytest

LCC_NB = os.path.join(os.path.dirname(sys.executable), "lcc_nb")

# luftmeer/DeepCluster's README runs `python3 main.py` (GPU) and `python3 main.py --clustering sklearn` (CPU); its commands.txt
# adds the two contrastive strategies. Translated only where they cannot run offline or on a small CPU budget:
# - `python3 main.py` → `lcc_nb deepcluster --recipe reference` (the recipe holds main.py's defaults; underscores accepted);
# - MNIST (a download) → the offline digits (--dataset digits); tiny settings: 100 / 10 epochs → 1, 224-px inputs → 16
#   (--image-size 16), AlexNet's 4096 classifier units → 512 (--model-options hidden=512);
# - --clustering sklearn also means scikit-learn's KMeans (k-means++, up to 300 iterations) and a plain shuffle there:
#   here those are their own settings, given explicitly (--kmeans-init k-means++ --kmeans-iters 300 --sampler random);
# - --metrics_file X.csv → dropped (the per-epoch numbers go to results.json in --out-dir); --input_dim 1 → kept (in_chans).
LUFTMEER_COMMANDS = {
    "readme": [],
    "readme-cpu": ["--clustering", "sklearn", "--kmeans-init", "k-means++", "--kmeans-iters", "300", "--sampler", "random"],
    "strategy-1": "--num_classes 10 --epochs 10 --dataset MNIST --metrics --input_dim 1 --verbose --contrastive_strategy_1".split(),
    "strategy-2": "--num_classes 10 --epochs 10 --dataset MNIST --metrics --input_dim 1 --verbose --contrastive_strategy_2".split(),
}
TINY_LUFTMEER = ["--dataset", "digits", "--epochs", "1", "--image-size", "16", "--model-options", "hidden=512", "--no-progress"]

@pytest.mark.parametrize("name", list(LUFTMEER_COMMANDS))
def test_luftmeer_readme_commands_run(tmp_path, name):
    args = ["deepcluster", "--recipe", "reference", *LUFTMEER_COMMANDS[name], *TINY_LUFTMEER, "--out-dir", str(tmp_path)]
    proc = subprocess.run([LCC_NB, *args], capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path/"results.json").read_text())
    config, data = results["config"]["config"], results["config"]["data"]
    assert (config["pca"], config["remove_head"], config["kmeans_init"] if name != "readme-cpu" else "random") == (False, False, "random")
    assert data["train_split"] == "test" and results["config"]["model"]["model"] == "lcc/alexnet_bn"
    assert config["contrastive"] == {"strategy-1": "margin", "strategy-2": "two_views"}.get(name, "none")
    if name.startswith("strategy"): assert results["history"][-1]["train_contrastive"] > 0
    assert 0 <= results["method"]["nmi"] <= 1 and results["method"]["labelled"] == 360
