"""How much of bench/cd_fashion_mnist.py's table is k-means luck? Rescore its final checkpoint: raw pixels, CD backbone
and CD heads on the same test images, k-means (10 clusters) from several seeds, each seed's NMI and the scores of the
lowest-inertia run (the same rule for every row, no label used to choose). `latent_scores` in the main bench runs one
k-means (seed 0) per row.

Usage (after bench/cd_fashion_mnist.py with the same --train_size/--test_size/--seed):
    OMP_NUM_THREADS=1 .venv/bin/python bench/cd_fashion_mnist_rescore.py --out bench/results/cd_fashion_mnist_rescore.md
"""
from pathlib import Path

import numpy as np
from fastcore.script import call_parse

from lcc_nb.cd import load_cd
from lcc_nb.clustering import kmeans
from lcc_nb.core import list_checkpoints
from lcc_nb.latents import extract_latents
from lcc_nb.metrics import ari, cluster_acc, nmi
from lcc_nb.runs import subset_preset

def rescore(x, y, restarts:int) -> dict:
    "Each seed's NMI and NMI / ARI / ACC of the lowest-inertia of `restarts` k-means runs on `x`."
    runs = [kmeans(np.asarray(x, np.float32), len(np.unique(y)), seed=s) for s in range(restarts)]
    best = min(runs, key=lambda r: r.inertia).labels
    return {"per_seed": [nmi(y, r.labels) for r in runs], "nmi": nmi(y, best), "ari": ari(y, best), "acc": cluster_acc(y, best)}

@call_parse
def main(train_size:int=5000, test_size:int=0, seed:int=0, # the subset of the main bench's run
         run_dir:str="_runs/cd_fashion_mnist", # the main bench's run folder
         root:str="data", restarts:int=5, # k-means seeds per row
         out:str=""): # write the markdown table here; "" prints only
    "Rescore the last checkpoint of `run_dir` with `restarts` k-means seeds per row."
    subset_preset("fashion_mnist", train_size or None, test_size or None, seed)
    checkpoint = list_checkpoints(Path(run_dir)/"checkpoints")[-1]
    network, images, _ = load_cd(checkpoint, eval_split="test", root=root)
    y = np.asarray(images.targets)
    latents = extract_latents(network, images, ["backbone"], with_outputs=True, progress=False)
    pixels = np.stack([np.asarray(images[i][0]).ravel() for i in range(len(images))])
    lines = [f"{len(y):,} test images, checkpoint {checkpoint}, lowest inertia of {restarts} k-means seeds per row", "",
             "| row | NMI | ARI | ACC | NMI of each seed |", "|---|---|---|---|---|"]
    for name, x in (("raw pixels", pixels), ("CD backbone", latents["backbone"]), ("CD heads", latents.outputs)):
        s = rescore(x, y, restarts)
        lines.append(f"| {name} | {s['nmi']:.3f} | {s['ari']:.3f} | {s['acc']:.3f} | {', '.join(f'{v:.3f}' for v in s['per_seed'])} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if out: Path(out).write_text(text)
