"""DeepCluster (plain, strategy 2, strategy 1) against raw-pixel k-means on Fashion-MNIST, in one process on the same test images.

Every row is scored the same way (`lcc_nb.runs.latent_scores`): k-means with as many clusters as classes on the test
images' latents (NMI / ARI / Hungarian ACC) and the mis-clustered fraction of their 5-NN Louvain communities. The raw
pixels and their PCA-50 are measured first (`lcc_nb.runs.pixel_baselines`), then each DeepCluster variant is trained on a
stratified, seeded subset of the training images (`lcc_nb.runs.subset_preset`) with the `fashion_mnist` recipe (plus
`--settings`), and its latents of the test images (the run's own centre-crop transform) are scored at every `--layers`.
Seconds: wall and CPU (user + system of this process, all threads) of each row.

Run from the project root with the data in data/FashionMNIST/raw (the defaults are the headline run of
bench/results/deepcluster_fashion_mnist.md: 10,000 training images, every variant at the recipe's 10 epochs and, for the
contrastive strategies, its contrastive weight 0.1 and temperature 0.5):

    OMP_NUM_THREADS=1 .venv/bin/python bench/deepcluster_fashion_mnist.py --untrained --out bench/results/deepcluster_fashion_mnist

(`--train-size 5000 --settings '{"epochs": 3, ...}' --variants <one>`: the probes of that report.)

(`--quick`: 2,000 training images, 1 epoch, a smoke check of the script.)
"""
from __future__ import annotations
import argparse, json, resource, time
from pathlib import Path

VARIANTS = {"plain": "none", "strategy 2": "two_views", "strategy 1 (margin)": "margin", "strategy 1 (supcon)": "supcon"}


def cpu_seconds() -> float:
    "User + system CPU seconds of this process so far (all its threads)."
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn):
    "`(result, wall seconds, CPU seconds)` of one call."
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = fn()
    return result, time.perf_counter() - wall, cpu_seconds() - cpu


def score_run(run, data:str, root:str, layers:list[str], seed:int) -> dict:
    "`latent_scores` of the trained network's `layers` on the test images, seen through the run's eval transform."
    from lcc_nb.data import get_dataset
    from lcc_nb.latents import extract_latents
    from lcc_nb.runs import latent_scores
    test = get_dataset(data, "test", root=root, transform=run.plugin.eval_data.transform)
    x = extract_latents(run.model, test, layers, progress=False).latents
    return {layer: latent_scores(x[layer], test.targets, seed) for layer in layers}


def untrained_scores(data:str, args, settings:dict) -> dict:
    "`score_run` of the network DeepCluster starts from (same recipe and seed, no training): what training adds is the difference."
    from types import SimpleNamespace
    from lcc_nb.config import run_configs
    from lcc_nb.deepcluster import build_deepcluster
    from lcc_nb.deepcluster_config import DEEPCLUSTER_ROLES
    configs = run_configs("deepcluster", DEEPCLUSTER_ROLES, args.recipe, {**settings, "dataset": data, "root": args.root, "seed": args.seed})
    net, plugin, _ = build_deepcluster(configs)
    return score_run(SimpleNamespace(model=net, plugin=plugin), data, args.root, args.layers, args.seed)


def run_variant(contrastive:str, data:str, args, settings:dict) -> dict:
    "Train one DeepCluster variant and score it; its row(s), timings and the per-epoch pseudo-label NMI."
    from lcc_nb.deepcluster import run_deepcluster
    run, wall, cpu = timed(lambda: run_deepcluster(recipe=args.recipe, dataset=data, root=args.root, contrastive=contrastive,
                                                   seed=args.seed, progress=False, resume=False, **settings))
    scores, score_wall, score_cpu = timed(lambda: score_run(run, data, args.root, args.layers, args.seed))
    history = [round(float(row["nmi"]), 3) for row in run.train.history if "nmi" in row]
    return {"scores": scores, "seconds_wall": wall + score_wall, "seconds_cpu": cpu + score_cpu,
            "pseudo_label_nmi_train": run.metrics.get("nmi"), "pseudo_label_nmi_by_epoch": history}


def table(rows:list[dict]) -> str:
    "The markdown table of every row."
    lines = ["| row | latent | NMI | ARI | ACC | MC fraction | pseudo-label NMI (train) | seconds wall | seconds CPU |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pl = f"{r['pseudo_label_nmi_train']:.3f}" if r.get("pseudo_label_nmi_train") is not None else ""
        lines.append(f"| {r['row']} | {r['latent']} | {r['nmi']:.3f} | {r['ari']:.3f} | {r['acc']:.3f} | {r['mc_fraction']:.3f} "
                     f"| {pl} | {r['seconds_wall']:.0f} | {r['seconds_cpu']:.0f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-size", type=int, default=10000, help="training images (a stratified, seeded subset); 0: all 60,000")
    p.add_argument("--test-size", type=int, default=2000, help="test images scored (a stratified, seeded subset)")
    p.add_argument("--variants", default="strategy 2,strategy 1 (margin),plain", help=f"comma-separated, of {list(VARIANTS)}")
    p.add_argument("--recipe", default="fashion_mnist", help="DeepCluster recipe under the settings")
    p.add_argument("--settings", default="{}", help="JSON of more run_deepcluster settings, e.g. '{\"epochs\": 4}'")
    p.add_argument("--variant-settings", default="{}",
                   help="JSON {variant: {settings}} that win over --settings for that variant, e.g. '{\"strategy 2\": {\"epochs\": 4}}'")
    p.add_argument("--layers", default="fc1,features", help="comma-separated submodules scored")
    p.add_argument("--root", default="data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--untrained", action="store_true", help="also score the untrained network DeepCluster starts from")
    p.add_argument("--quick", action="store_true", help="2,000 training images, 1 epoch: a smoke check")
    p.add_argument("--out", default=None, help="write <out>.json (after every variant)")
    args = p.parse_args(argv)
    args.layers = [s.strip() for s in args.layers.split(",") if s.strip()]
    settings = json.loads(args.settings)
    if args.quick: args.train_size, settings = 2000, {**settings, "epochs": 1}
    from lcc_nb.data import get_dataset
    from lcc_nb.runs import pixel_baselines, subset_preset
    data = subset_preset("fashion_mnist", args.train_size or None, args.test_size or None, args.seed)
    rows = []
    test = get_dataset(data, "test", root=args.root)
    for name, (scores, wall, cpu) in _timed_baselines(pixel_baselines, test, args.seed).items():
        rows.append({"row": name, "latent": "pixels", **scores, "seconds_wall": wall, "seconds_cpu": cpu})
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    if args.untrained:
        found, wall, cpu = timed(lambda: untrained_scores(data, args, settings))
        for layer, scores in found.items():
            rows.append({"row": "untrained network (DeepCluster's start)", "latent": layer, **scores, "seconds_wall": wall, "seconds_cpu": cpu})
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    per_variant = json.loads(args.variant_settings)
    runs = {}
    for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
        if variant not in VARIANTS: raise SystemExit(f"unknown variant {variant!r}: choose among {list(VARIANTS)}")
        found = run_variant(VARIANTS[variant], data, args, {**settings, **per_variant.get(variant, {})})
        runs[variant] = found
        for layer, scores in found["scores"].items():
            rows.append({"row": f"DeepCluster, {variant}", "latent": layer, **scores, "seconds_wall": found["seconds_wall"],
                         "seconds_cpu": found["seconds_cpu"], "pseudo_label_nmi_train": found["pseudo_label_nmi_train"]})
            print(table(rows[-1:]).splitlines()[-1], f"pseudo-label NMI by epoch {found['pseudo_label_nmi_by_epoch']}", flush=True)
        if args.out: save(args.out, {"data": data, "recipe": args.recipe, "settings": settings, "variant_settings": per_variant,
                                     "rows": rows, "runs": runs})   # after every variant: a crash keeps what was measured
    print(table(rows))


def save(out:str, found:dict):
    "Write `<out>.json` (every row and run); the table is printed (`<out>.md` is the hand-written report around it)."
    out = Path(out); out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(found, indent=1, default=str))


def _timed_baselines(pixel_baselines, test, seed:int) -> dict:
    "`{row: (scores, wall, cpu)}` of the pixel baselines (their own timer gives wall seconds per row; CPU is split alike)."
    found, wall, cpu = timed(lambda: pixel_baselines(test, seed=seed))
    total = sum(s["seconds"] for s in found.values()) or 1.0
    return {name: ({k: v for k, v in s.items() if k != "seconds"}, s["seconds"], cpu * s["seconds"] / total)
            for name, s in found.items()}


if __name__ == "__main__":
    main()
