"Tests of lcc_nb.llc that do not fit in the notebook: kill-and-resume, longer accuracy runs, the command line."
import importlib.util, json, math, os, signal, subprocess, sys, textwrap, time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from lcc_nb import llc
from lcc_nb.core import load_checkpoint, load_state_dict_checked

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

RUN_CHECKPOINTS = textwrap.dedent("""
    import sys
    from pathlib import Path
    import torch, torch.nn.functional as F
    from torch import nn
    from lcc_nb.core import save_checkpoint
    from lcc_nb.llc import llc_over_checkpoints
    from lcc_nb.testing import toy_blobs, tensor_loader
    torch.set_num_threads(1)
    factory = lambda: nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 3))
    x, y = toy_blobs(200, 3, 4, std=1.5)
    loader = tensor_loader(x, y, batch_size=32)
    settings = dict(loss_fn=F.cross_entropy, epsilon=1e-4, gamma=100.0, num_chains=4, num_draws=80)
    if __name__ == "__main__":
        ckpt_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
        if not ckpt_dir.exists():
            for step in range(0, 80, 10):
                torch.manual_seed(step)
                save_checkpoint({"model": factory().state_dict(), "step": step, "epoch": 0}, ckpt_dir)
        table = llc_over_checkpoints(ckpt_dir, factory, loader, out_dir=out_dir, progress=False, **settings)
        print("TABLE" + table.to_json(orient="records"))
""")

def _run_script(script, *args, **popen_kw):
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen_kw)

def _table(proc) -> list:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return json.loads(out.split("TABLE", 1)[1])

def test_llc_over_checkpoints_resumes_after_kill(tmp_path):
    script = tmp_path / "run.py"; script.write_text(RUN_CHECKPOINTS)
    ckpts, out = tmp_path / "ckpts", tmp_path / "llc"
    proc = _run_script(script, ckpts, out)
    deadline = time.time() + 240
    while len(list(out.glob("step-*.json"))) < 2 and proc.poll() is None and time.time() < deadline: time.sleep(0.02)
    proc.send_signal(signal.SIGKILL); proc.wait()
    done_before = {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in out.glob("step-*.json")}
    assert 2 <= len(done_before) < 8, f"the kill did not land mid-way ({len(done_before)} of 8 done)"

    resumed = _table(_run_script(script, ckpts, out))
    assert [r["step"] for r in resumed] == list(range(0, 80, 10))
    reused = {Path(r["result_file"]).name for r in resumed if r["reused"]}
    assert reused == set(done_before)                                  # finished checkpoints were skipped ...
    for name, (mtime, text) in done_before.items():                    # ... and their files left untouched
        assert (out / name).stat().st_mtime_ns == mtime and (out / name).read_text() == text

    # the results equal a fresh estimate of the same checkpoints (one finished before the kill, one after the resume)
    spec = importlib.util.spec_from_file_location("llc_resume_script", script)
    run = importlib.util.module_from_spec(spec); spec.loader.exec_module(run)
    torch.set_num_threads(1)
    after = next(r for r in resumed if not r["reused"])
    for name in (sorted(done_before)[0], Path(after["result_file"]).name):
        model = load_state_dict_checked(run.factory(), load_checkpoint(ckpts / name.replace(".json", ".pt"))["model"])
        fresh = llc.estimate_llc(model, run.loader, **run.settings)
        saved = llc.LLCResult.from_dict(json.loads((out / name).read_text())["result"])
        np.testing.assert_allclose(saved.per_chain, fresh.per_chain, rtol=1e-6)
        np.testing.assert_allclose(saved.loss_trace, fresh.loss_trace, rtol=1e-6)
        assert saved.init_loss == pytest.approx(fresh.init_loss, rel=1e-9)

def test_normal_crossing_long_chains():
    "At nβ = 1000, γ = 1 the tempered LLC of w₁²w₂⁴ is 0.225 (λ = 1/4): the estimate must match it."
    torch.set_num_threads(1)
    x = torch.randn(100, 1, generator=torch.Generator().manual_seed(0)); x = x / x.pow(2).mean().sqrt()
    loader = DataLoader(TensorDataset(x, torch.zeros(100, 1)), batch_size=100)
    res = llc.estimate_llc(llc.NormalCrossing((1, 2)), loader, loss_fn=F.mse_loss, epsilon=5e-4, gamma=1.0, nbeta=1000.0,
                           num_chains=32, num_draws=1500, num_burnin=800)
    truth = llc.normal_crossing_tempered_llc(1000.0, 1.0)
    standard_error = res.std / math.sqrt(32)
    assert abs(res.mean - truth) < 4 * standard_error + 0.05 * truth, (res.mean, standard_error, truth)
    assert abs(res.mean - 0.25) < 0.06 and res.mala_acceptance > 0.9

def test_regular_model_with_more_weights():
    "Linear regression with d = 12: the estimate matches the exact expectation, which is close to d/2 = 6."
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(1)
    n, d = 400, 12
    x = torch.randn(n, d, generator=g); y = x @ torch.randn(d, generator=g) + 0.3 * torch.randn(n, generator=g)
    model = torch.nn.Linear(d, 1, bias=False)
    with torch.no_grad(): model.weight.copy_(torch.linalg.lstsq(x, y[:, None]).solution.T)
    loader = DataLoader(TensorDataset(x, y[:, None]), batch_size=n)
    res = llc.estimate_llc(model, loader, loss_fn=F.mse_loss, epsilon=5e-4, gamma=1.0, num_chains=16, num_draws=600,
                           num_burnin=100)
    eigs = torch.linalg.eigvalsh((2 * x.T @ x / n).double()).numpy()
    exact = llc.quadratic_expected_llc(eigs, res.nbeta, 1.0, 5e-4, draw_steps=range(100, 700))
    assert abs(res.mean - exact) < 4 * res.std / math.sqrt(16), (res.mean, exact)
    assert abs(exact - d / 2) < 0.15 * d / 2

# ---- run functions and the command line ----------------------------------------------------------------------------

SMALL = dict(dataset="digits", model="lcc/small_cnn", num_chains=2, num_draws=8, batch_size=16, progress=False)

def _checkpoints(folder, steps=(15, 5)):
    from lcc_nb.core import save_checkpoint
    from lcc_nb.models import get_model
    for step in steps:
        torch.manual_seed(step)
        save_checkpoint({"model": get_model("lcc/small_cnn", 10, in_chans=1).state_dict(), "step": step, "epoch": 0}, folder)

def test_run_functions_write_their_files(tmp_path):
    "The three run functions on digits / lcc/small_cnn: their files, results.json, and the model built for 1 channel."
    import pandas as pd
    est = llc.run_llc_estimate(epsilon=1e-4, gamma=100.0, out_dir=tmp_path/"est", **SMALL)
    assert llc.LLCResult.load(tmp_path/"est/llc.json").loss_trace.shape == (2, 8) and (tmp_path/"est/llc_trace.html").exists()
    assert json.loads((tmp_path/"est/results.json").read_text())["final"]["nbeta"] == pytest.approx(16 / math.log(16))
    cal = llc.run_llc_calibration(epsilons=[1e-5, 1e-4], out_dir=tmp_path/"cal", **SMALL)
    assert len(pd.read_csv(tmp_path/"cal/calibration.csv")) == 2 and (tmp_path/"cal/calibration_heatmaps.html").exists()
    assert cal.results["final"]["epsilon"] in (1e-5, 1e-4)
    _checkpoints(tmp_path/"ck")
    over = llc.run_llc_checkpoints(checkpoint_dir=tmp_path/"ck", epsilon=1e-4, gamma=100.0, **SMALL)
    table = pd.read_csv(tmp_path/"ck/llc/llc_over_training.csv")
    assert table["step"].tolist() == [5, 15] and table["test_loss"].notna().all() and over.results["method"]["checkpoints"] == 2
    assert (tmp_path/"ck/llc/llc_over_training.html").exists() and len(list((tmp_path/"ck/llc").glob("step-*.json"))) == 2

def _llc_commands():
    "The `llc` rows of the CLI table (empty until the table has them)."
    from lcc_nb.cli import COMMANDS
    return {c.name for c in COMMANDS if c.name.startswith("llc ")}

def test_cli_estimate_calibrate_checkpoints(tmp_path):
    "`lcc_nb llc estimate | calibrate | checkpoints` run the run functions with the settings typed."
    if len(_llc_commands()) < 3: pytest.skip("the CLI table has no llc commands yet")
    from lcc_nb.cli import main
    small = ["--num-chains", "2", "--num-draws", "8", "--batch-size", "16", "--no-progress"]
    main(["llc", "estimate", "--model", "lcc/small_cnn", "--epsilon", "1e-4", "--gamma", "0", "--out-dir", str(tmp_path/"est"), *small])
    assert llc.LLCResult.load(tmp_path/"est/llc.json").settings["gamma"] == 0
    main(["llc", "calibrate", "--model", "lcc/small_cnn", "--epsilons", "1e-5,1e-4", "--out-dir", str(tmp_path/"cal"), *small])
    assert (tmp_path/"cal/calibration.csv").exists()
    _checkpoints(tmp_path/"ck")
    main(["llc", "checkpoints", "--model", "lcc/small_cnn", "--checkpoint-dir", str(tmp_path/"ck"), "--epsilon", "1e-4", *small])
    assert len(list((tmp_path/"ck/llc").glob("step-*.json"))) == 2

def test_cli_console_script_rejects_bad_settings():
    "The installed `lcc_nb` command: a bad setting exits with code 2 and names the setting."
    if len(_llc_commands()) < 3: pytest.skip("the CLI table has no llc commands yet")
    exe = os.path.join(os.path.dirname(sys.executable), "lcc_nb")
    bad = subprocess.run([exe, "llc", "estimate", "--epsilon", "0"], capture_output=True, text=True, env=ENV)
    assert bad.returncode == 2 and "lcc_nb llc estimate" in bad.stderr and "epsilon" in bad.stderr

# ---- devinterp's accuracy cases: models whose learning coefficient is known exactly ------------------------------------

def aoyagi_lc(M:int, H:int, N:int, r:int) -> float:
    "Aoyagi & Watanabe (2005): the learning coefficient of reduced-rank regression y = BAx (A: H×M, B: N×H) at a rank-r truth."
    if N + r <= M + H and M + r <= N + H and H + r <= M + N:
        return (2 * (H + r) * (M + N) - (M - N)**2 - (H + r)**2 + (M + H + N + r) % 2) / 8
    if M + H < N + r: return (H * M - H * r + N * r) / 2
    if N + H < M + r: return (H * N - H * r + M * r) / 2
    return M * N / 2

def test_aoyagi_formula():
    assert [aoyagi_lc(*c) for c in [(2, 2, 2, 1), (3, 2, 3, 1), (4, 3, 4, 2), (2, 1, 5, 1), (3, 3, 3, 3)]] == [2.0, 3.5, 7.0, 3.0, 4.5]

@pytest.mark.parametrize("M,H,N,r", [(2, 2, 2, 1), (3, 2, 3, 1), (4, 3, 4, 2), (2, 1, 5, 1)])
def test_reduced_rank_regression(M, H, N, r):
    "devinterp's RRR case: at a rank-r truth the estimate is Aoyagi's λ (within 20%), far below the regular d/2."
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, M, generator=g)
    A0, B0 = torch.randn(r, M, generator=g), torch.randn(N, r, generator=g)
    model = torch.nn.Sequential(torch.nn.Linear(M, H, bias=False), torch.nn.Linear(H, N, bias=False))
    with torch.no_grad():                                               # the truth, with H − r unused hidden units
        model[0].weight.zero_(); model[0].weight[:r] = A0
        model[1].weight.zero_(); model[1].weight[:, :r] = B0
    loader = DataLoader(TensorDataset(x, x @ (B0 @ A0).T), batch_size=1000)
    res = llc.estimate_llc(model, loader, loss_fn=lambda out, y: ((out - y)**2).sum(1).mean() / 2, epsilon=1e-5, gamma=1.0,
                           nbeta=1e4, num_chains=8, num_draws=1000, num_burnin=500)
    truth = aoyagi_lc(M, H, N, r)                                      # the regular d/2 = (M + N)H/2 is 4, 6, 12, 3.5
    assert abs(res.mean - truth) < 0.2 * truth, (res.mean, truth)

@pytest.mark.parametrize("powers,epsilon", [((1, 1), 1e-3), ((1, 2), 1e-3), ((1, 3), 1e-3), ((0, 1), 1e-4)])
def test_normal_crossing_without_localisation(powers, epsilon):
    "devinterp's normal-crossing case with γ = 0 (its default): chains from w* = 0 give λ = min 1/(2kᵢ) within 25%."
    torch.set_num_threads(1)
    x = torch.randn(100, 1, generator=torch.Generator().manual_seed(0)); x = x / x.pow(2).mean().sqrt()
    loader = DataLoader(TensorDataset(x, torch.zeros(100, 1)), batch_size=100)
    res = llc.estimate_llc(llc.NormalCrossing(powers), loader, loss_fn=F.mse_loss, epsilon=epsilon, gamma=0.0, nbeta=1000.0,
                           num_chains=16, num_draws=1000, num_burnin=500)
    truth = llc.normal_crossing_lc(powers)
    assert res.settings["gamma"] == 0 and abs(res.mean - truth) < 0.25 * truth, (res.mean, truth)

def test_normal_crossing_2_2_is_low_at_finite_nbeta():
    "(2, 2) has λ = 1/4 with multiplicity 2: at nβ = 1000 the tempered posterior's E[nβ·L] is 0.165, not 0.25 (a log correction)."
    torch.set_num_threads(1)
    truth = llc.normal_crossing_tempered_llc(1000.0, 1.0, powers=(2, 2))
    assert 0.15 < truth < 0.18                                         # ~34% below λ: the "30% low" estimates are right
    assert llc.normal_crossing_tempered_llc(1e8, 1.0, powers=(2, 2)) > truth + 0.03   # and it creeps up with nβ, as 1/ln nβ
    x = torch.randn(100, 1, generator=torch.Generator().manual_seed(0)); x = x / x.pow(2).mean().sqrt()
    loader = DataLoader(TensorDataset(x, torch.zeros(100, 1)), batch_size=100)
    res = llc.estimate_llc(llc.NormalCrossing((2, 2)), loader, loss_fn=F.mse_loss, epsilon=1e-3, gamma=1.0, nbeta=1000.0,
                           num_chains=16, num_draws=3000, num_burnin=1000)
    standard_error = res.std / math.sqrt(16)
    assert abs(res.mean - truth) < 4 * standard_error + 0.05 * truth, (res.mean, standard_error, truth)

def test_normal_crossing_2_2_devinterp_protocol():
    "devinterp's sampler_accuracy_test for (2, 2), its protocol and its criterion: λ = 1/4 within 3.5 chain std of the mean."
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(42)
    x, y = 2 * torch.randn(1000, generator=g), 0.25 * torch.randn(1000, generator=g)   # x ~ N(0, 2²), y = noise, n = 1000
    loader = DataLoader(TensorDataset(x, y), batch_size=1000, shuffle=True)
    res = llc.estimate_llc(llc.NormalCrossing((2, 2)), loader, loss_fn=F.mse_loss, epsilon=4e-4, gamma=0.0, num_chains=10,
                           num_draws=5000, seed=42, init_loss_batches="first_batches")   # nβ = default_nbeta(1000), no burn-in
    assert res.nbeta == pytest.approx(1000 / math.log(1000))
    assert res.mean - 3.5 * res.std < 0.25 < res.mean + 3.5 * res.std, (res.mean, res.std)

# ---- LLCPlugin under DDP -----------------------------------------------------------------------------------------------

def _fit_digits_with_llc(batch_size:int, out_dir=None) -> list:
    "A small MLP trained on digits with `llc_at_checkpoints` (batch_size per process: the same global batch at any world size);\n"
    "every rank's plug-in rows and its number of `estimate_llc` calls, in rank order."
    from sklearn.datasets import load_digits
    from lcc_nb import llc_plugin
    from lcc_nb.distributed import all_gather_object
    from lcc_nb.train import TrainConfig, Trainer
    torch.set_num_threads(1)
    digits = load_digits()
    data = TensorDataset(torch.tensor(digits.data[:512] / 16, dtype=torch.float32), torch.tensor(digits.target[:512]))
    calls, estimate = [], llc_plugin.estimate_llc
    llc_plugin.estimate_llc = lambda *a, **kw: calls.append(1) or estimate(*a, **kw)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    cfg = TrainConfig(epochs=2, batch_size=batch_size, optimizer="sgd", lr=0.1, momentum=0.9, progress=False, out_dir=out_dir,
                      checkpoint_steps=[0, 5], llc_at_checkpoints=True,          # the SGLD batch: the loop's global batch
                      llc_settings={"epsilon": 1e-4, "gamma": 100.0, "num_chains": 2, "num_draws": 30})
    trainer = Trainer(model, data, config=cfg)
    result = trainer.fit()
    rows = trainer.plugins[-1].table().to_dict("records")
    return all_gather_object({"rows": rows, "calls": len(calls), "history": [h.get("llc_mean") for h in result.history],
                              "weights": {k: v.detach().clone() for k, v in model.state_dict().items()}})

def test_llc_plugin_under_ddp_matches_one_process(tmp_path):
    "2 gloo processes (batch 16 each) vs one (batch 32): rank 0 estimates at every checkpoint step, on the weights the\n"
    "single process has there (equal up to the all-reduce's rounding) and with the same SGLD batch (the global one), so its\n"
    "rows equal the single process's; rank 1 estimates nothing, and a resumed DDP run keeps rank 0's rows."
    from lcc_nb.distributed import launch
    torch.set_num_threads(1)
    single, = _fit_digits_with_llc(32)
    ranks = launch(_fit_digits_with_llc, 16, str(tmp_path / "ddp"), nprocs=2, backend="gloo", start_method="fork")
    for k, v in single["weights"].items(): torch.testing.assert_close(ranks[0]["weights"][k], v, rtol=1e-5, atol=1e-6)
    steps = [r["step"] for r in single["rows"]]
    assert steps == [0, 5, 16, 32] and single["calls"] == 4                     # 16 steps per epoch: checkpoints 0, 5 and epoch ends
    assert [r["step"] for r in ranks[0]["rows"]] == steps and ranks[0]["calls"] == 4
    assert ranks[1]["calls"] == 0 and ranks[1]["rows"] == []                     # no duplicated work on rank 1
    for ours, theirs in zip(ranks[0]["rows"], single["rows"]):
        assert ours["nbeta"] == pytest.approx(32 / math.log(32))                   # m = the global batch, as in one process
        assert ours["init_loss"] == pytest.approx(theirs["init_loss"], rel=1e-5)
        np.testing.assert_allclose(ours["per_chain"], theirs["per_chain"], rtol=1e-3, atol=1e-3)
    assert ranks[0]["history"] == pytest.approx(single["history"], rel=1e-3) and ranks[1]["history"] == ranks[0]["history"]
    saved = load_checkpoint(sorted((tmp_path / "ddp" / "checkpoints").glob("step-*.pt"))[-1])["plugins"]["LLCPlugin"]["rows"]
    assert [r["step"] for r in saved] == steps                                   # rank 0's rows travel in the checkpoint


def test_mala_transient_from_w0_on_the_localising_gaussian():
    "Issue #14: on U = γ/2‖w − w₀‖² the MALA log-ratio is (εγ²/8)(‖w−w₀‖² before − after), so the first steps away from w₀ have ≈ −ε²γ²D/8."
    from lcc_nb.llc_estimator import mala_acceptance_prob
    D, eps, gamma, g = 200_000, 1e-5, 1e3, torch.Generator().manual_seed(0)
    x0 = torch.zeros(D, dtype=torch.float64)                       # the chain starts at w₀ (no burn-in)
    x1 = x0 - eps / 2 * gamma * x0 + math.sqrt(eps) * torch.randn(D, generator=g, dtype=torch.float64)
    accept = mala_acceptance_prob(x0, x1, gamma * x0, gamma * x1, gamma / 2 * x0 @ x0, gamma / 2 * x1 @ x1, eps)
    exact = eps * gamma**2 / 8 * (x0 @ x0 - x1 @ x1)
    assert math.isclose(math.log(accept.item()), exact.item(), rel_tol=1e-9)
    assert math.isclose(exact.item(), -eps**2 * gamma**2 * D / 8, rel_tol=0.02)   # ≈ −2.5 here; −140 at the ResNet-18's D = 11.2 M
