"""Does Contrastive Disentangling find sub-classes? On `shapes` (coarse label = shape, fine label = shape × colour),
k-means with the 12 fine classes on CD's feature heads and backbone, versus the penultimate features (`fc1`) of a
classifier trained on the coarse labels, and of the same network untrained. Prints fine-label NMI side by side.

Usage: python bench/cd_shapes.py [epochs] [colour_strength] [width] [out_dir or -] [min_scale]   (small_cnn width 16: ~30 s per CD epoch on a loaded CPU core)
"""
import sys, time

import numpy as np
import torch

from lcc_nb.cd import best_kmeans, run_cd
from lcc_nb.core import set_seed
from lcc_nb.data import get_dataset
from lcc_nb.latents import extract_latents
from lcc_nb.metrics import nmi
from lcc_nb.models import get_model
from lcc_nb.train import fit

epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 30
strength = float(sys.argv[2]) if len(sys.argv) > 2 else 0.5
width = int(sys.argv[3]) if len(sys.argv) > 3 else 16
out_dir = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] != "-" else None   # training logs ("-": none)
min_scale = float(sys.argv[5]) if len(sys.argv) > 5 else 0.08   # smallest crop area of the random resized crop
seed = 42
net = dict(in_chans=3, image_size=32, width=width, hidden=128)

everything = get_dataset("shapes", "train+test")
fine, coarse = everything.fine_targets, everything.targets

def fine_nmi(x): return nmi(fine, best_kmeans(np.asarray(x), 12, seed=seed))
def coarse_nmi(x): return nmi(coarse, best_kmeans(np.asarray(x), 4, seed=seed))

def penultimate(model):
    return extract_latents(model, everything, "act", progress=False)["act"]

t0 = time.time()
print(f"shapes train+test (n={len(everything)}), k-means k=12 vs fine labels, k=4 vs coarse; CD {epochs} epochs, "
      f"colour strength {strength}, min crop {min_scale}, small_cnn width {width}", flush=True)
def report(name, fine_value, coarse_value): print(f"{name:28s} fine NMI {fine_value:.3f}   coarse NMI {coarse_value:.3f}", flush=True)
set_seed(seed)
untrained = penultimate(get_model("lcc/small_cnn", 4, **net))
report("untrained small_cnn fc1", fine_nmi(untrained), coarse_nmi(untrained))
set_seed(seed)
classifier = get_model("lcc/small_cnn", 4, **net)
fit(classifier, get_dataset("shapes", "train"), epochs=10, batch_size=128, optimizer="adam", lr=1e-3, seed=seed, progress=False)
coarse_features = penultimate(classifier)
report("coarse classifier fc1", fine_nmi(coarse_features), coarse_nmi(coarse_features))
t1 = time.time()
cd = run_cd(dataset="shapes", model="lcc/small_cnn", model_options=dict(width=width, hidden=128), feature_num=128, epochs=epochs,
            lr=3e-3, eval_every=max(epochs // 4, 1), seed=seed, augmentation={"strength": strength, "min_scale": min_scale}, progress=False,
            out_dir=out_dir)
t2 = time.time()
for space in ("backbone", "feature"):
    report(f"CD {space}", cd.metrics[f"{space}_fine_nmi"], cd.metrics[f"{space}_class_nmi"])
print(f"ratio CD feature / coarse classifier (fine NMI): {cd.metrics['feature_fine_nmi'] / fine_nmi(coarse_features):.2f}")
print(f"time: classifier {t1 - t0:.0f} s, CD {t2 - t1:.0f} s")
for h in cd.train.history:
    if "subset_feature_fine_nmi" in h: print("epoch", h["epoch"] + 1, {k: round(v, 3) for k, v in h.items() if "nmi" in k})
