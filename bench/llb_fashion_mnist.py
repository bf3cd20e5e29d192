"""LLB on Fashion-MNIST: the frozen tiny ViT alone, the LLB branch alone and their α-ensemble, on the same test images.

Each seed executes the `llb` run notebook (nbs/runs/llb.ipynb, through `lcc_nb.runs.run_notebook`, as
`lcc_nb run llb` does) with the `fashion_mnist` recipe of `lcc_nb.llb_config` on a stratified, seeded subset of
Fashion-MNIST (`lcc_nb.runs.subset_preset`; the seed draws the subset too). The notebook first trains the tiny ViT
backbone (AdamW, weight decay 0.05, cosine, `--backbone-epochs` at `--backbone-lr`, no augmentation) on the training
images less a validation tenth, freezes it, trains the LLB branch (the recipe: 10 epochs, α = 0.8), picks the branch's
checkpoint on the validation tenth (the ensemble's NLL), and scores on the test subset: the backbone's own head (ℓ_v),
the branch alone (ℓ_nv), the ensemble at α = 0.8 and, re-scored from the same checkpoint without training, at α = 0.5.
Seconds: wall and CPU (user + system of this process and the notebook's kernel) of each seed's whole run.

Run from the project root with the data in data/FashionMNIST/raw (the defaults are the run of
bench/results/llb_fashion_mnist.md):

    OMP_NUM_THREADS=1 .venv/bin/python bench/llb_fashion_mnist.py --seeds 0,1 --out bench/results/llb_fashion_mnist

(`--quick`: 2,000 training images, 1 epoch of each, a smoke check of the script; `--from-json a.json b.json`: one table
of the rows of several such runs, with their mean and standard deviation.)
"""
from __future__ import annotations
import argparse, json, resource, statistics, time
from pathlib import Path

COLUMNS = {"test_acc_visual": "backbone alone (visual head)", "test_acc_branch": "branch alone", "test_acc": "ensemble α = 0.8",
           "test_acc_alpha_0.5": "ensemble α = 0.5"}


def cpu_seconds() -> float:
    "User + system CPU seconds of this process and its finished children (the notebook kernels)."
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_seed(seed:int, args, settings:dict) -> dict:
    "One execution of the llb run notebook: its metrics, with wall and CPU seconds."
    from lcc_nb.runs import run_notebook
    params = {"recipe": args.recipe, "train_size": args.train_size, "test_size": args.test_size, "seed": seed, "other_alphas": [0.5],
              "backbone_epochs": args.backbone_epochs, "backbone_lr": args.backbone_lr, "progress": False, **settings}
    wall, cpu = time.perf_counter(), cpu_seconds()
    metrics = run_notebook("llb", params, Path(args.runs)/f"seed{seed}", progress=False)
    return {"seed": seed, **metrics, "seconds_wall": time.perf_counter() - wall, "seconds_cpu": cpu_seconds() - cpu}


def table(rows:list[dict]) -> str:
    "The markdown table: one row per seed, then the mean (and the spread over seeds) when there are several."
    head = ["seed", *COLUMNS.values(), "ensemble α = 0.8 − backbone", "LLB training s", "seconds wall", "seconds CPU"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        accs = [f"{r[k]:.4f}" for k in COLUMNS]
        lines.append(f"| {r['seed']} | " + " | ".join(accs) + f" | {r['test_acc'] - r['test_acc_visual']:+.4f} | {r['time_s']:.0f} "
                     f"| {r['seconds_wall']:.0f} | {r['seconds_cpu']:.0f} |")
    if len(rows) > 1:
        def stat(f): return f"{statistics.mean(f(r) for r in rows):.4f} ± {statistics.stdev(f(r) for r in rows):.4f}"
        cells = [stat(lambda r, k=k: r[k]) for k in COLUMNS] + [stat(lambda r: r["test_acc"] - r["test_acc_visual"])]
        lines.append("| mean ± sd | " + " | ".join(cells) + " | | | |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-size", type=int, default=10000, help="training images (a stratified, seeded subset; a tenth is validation)")
    p.add_argument("--test-size", type=int, default=2000, help="test images scored (a stratified, seeded subset)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (each draws its own subset)")
    p.add_argument("--recipe", default="fashion_mnist", help="LLB recipe (lcc_nb.llb_config)")
    p.add_argument("--backbone-epochs", type=int, default=30, help="epochs of the tiny ViT backbone before it is frozen")
    p.add_argument("--backbone-lr", type=float, default=1e-3, help="its AdamW peak learning rate")
    p.add_argument("--settings", default="{}", help="JSON of more run-notebook parameters, e.g. '{\"epochs\": 5}'")
    p.add_argument("--runs", default="_runs/llb_fashion_mnist", help="where each seed's executed notebook and checkpoints go")
    p.add_argument("--quick", action="store_true", help="2,000 training images, 1 epoch of each: a smoke check")
    p.add_argument("--from-json", nargs="*", default=None, help="print the table of the rows of these <out>.json files (no run)")
    p.add_argument("--out", default=None, help="write <out>.json (after every seed); the table is printed (<out>.md is the hand-written report around it)")
    args = p.parse_args(argv)
    if args.from_json: return print(table([row for f in args.from_json for row in json.loads(Path(f).read_text())["rows"]]))
    settings = json.loads(args.settings)
    if args.quick: args.train_size, args.backbone_epochs, settings = 2000, 1, {**settings, "epochs": 1}
    rows = []
    for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
        rows.append(run_seed(seed, args, settings))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
        if args.out: Path(f"{args.out}.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
