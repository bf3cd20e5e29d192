"""Training-loop tests that need processes: 2-process gloo DDP vs one process, torchrun, and kill-and-resume."""
import json, os, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lcc_nb.core import load_checkpoint, list_checkpoints
from lcc_nb.testing import toy_blobs
from lcc_nb.distributed import gather_by_index, launch
from lcc_nb.train import Plugin, TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _toy_data(n=128):
    x, y = toy_blobs(n, 4, 8, std=1.0, seed=0)
    return torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))


class Head(Plugin):
    "A plug-in owning a layer with its own optimizer (gradients all-reduced by the loop), and a metric only rank 0 adds."
    def setup(self, trainer):
        self.head = nn.Linear(32, 4)
        self.optimizer = torch.optim.SGD(self.head.parameters(), lr=0.1, momentum=0.9)
    def optimizers(self, trainer): return [self.optimizer]
    def forward(self, trainer, batch): return self.head((trainer.train_model if trainer.training else trainer.model)(batch[0]))
    def on_epoch_end(self, trainer, logs):
        if trainer.is_main: logs["val_rank0"] = float(trainer.epoch)   # rises: early stopping after 2 epochs


def _fit_toy(batch_size):
    "Same model, data and global batch whatever the world size: SGD, no dropout, shuffled."
    torch.manual_seed(0)
    model, head = nn.Sequential(nn.Linear(8, 32), nn.ReLU()), Head()
    cfg = TrainConfig(epochs=4, batch_size=batch_size, optimizer="sgd", lr=0.1, momentum=0.9, scheduler="cosine",
                      grad_clip=1.0, progress=False, monitor="val_rank0", monitor_mode="min", patience=1)
    trainer = Trainer(model, _toy_data(), val_data=_toy_data(), config=cfg, plugins=[head])
    result = trainer.fit()
    assert result.epochs == 2 and result.stopped_early
    with torch.no_grad():   # outputs of every sample, each rank computing its shard, gathered by sample index
        rows = [(head.head(model(x)), index) for x, _, index in trainer.eval_loader(trainer.train_data, batch_size=10)]
    index, outputs = gather_by_index(torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows]))
    assert list(index) == list(range(len(trainer.train_data)))
    weights = {**model.state_dict(), **{f"head.{k}": v for k, v in head.head.state_dict().items()}}
    return {k: v.detach().clone() for k, v in weights.items()}, result.history, outputs


def test_two_gloo_processes_match_one_process():
    torch.set_num_threads(1)
    single_weights, single_history, single_outputs = _fit_toy(batch_size=32)
    ddp_weights, ddp_history, ddp_outputs = launch(_fit_toy, 16, nprocs=2, backend="gloo")
    assert len(single_weights) == 4   # model and plug-in head
    for k in single_weights: torch.testing.assert_close(ddp_weights[k], single_weights[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ddp_outputs, single_outputs, rtol=1e-4, atol=1e-5)
    for a, b in zip(single_history, ddp_history):
        assert a["step"] == b["step"]
        assert a["val_acc"] == pytest.approx(b["val_acc"]) and a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)


TORCHRUN_SCRIPT = """
import sys, torch
from torch import nn
from lcc_nb.testing import toy_blobs
from lcc_nb.train import TrainConfig, Trainer, get_world_size
x, y = toy_blobs(64, 4, 8, seed=0)
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
ds = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
res = Trainer(model, ds, config=TrainConfig(epochs=1, batch_size=8, out_dir=sys.argv[1], progress=False)).fit()
assert get_world_size() == 2 and res.step == 4, (get_world_size(), res.step)
torch.distributed.destroy_process_group()
"""


def test_torchrun_two_processes_only_rank0_writes(tmp_path):
    script = tmp_path/"ddp.py"; script.write_text(TORCHRUN_SCRIPT)
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    out = tmp_path/"run"
    subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", str(script), str(out)], env=ENV, check=True, timeout=120)
    assert [p.name for p in list_checkpoints(out/"checkpoints")] == ["step-000000004.pt"]
    assert len((out/"logs/epochs.jsonl").read_text().splitlines()) == 1
    results = json.loads((out/"results.json").read_text())
    assert results["steps"] == 4 and results["config"]["train"]["batch_size"] == 8 and results["method"] == {"name": None}


RESUME_SCRIPT = """
import sys, time, torch
from torch import nn
from lcc_nb.testing import toy_blobs
from lcc_nb.train import Plugin, TrainConfig, Trainer
out, resume, delay, reference = sys.argv[1], sys.argv[2] == "1", float(sys.argv[3]), sys.argv[4:]

class Slow(Plugin):
    "Slows the run down so the test can kill it between two checkpoints; consumes no randomness."
    def after_step(self, trainer): time.sleep(delay)

class StepCounter(Plugin):
    "A plug-in with state that must survive the kill."
    def __init__(self): self.count = 0
    def after_step(self, trainer): self.count += 1
    def state_dict(self): return {"count": self.count}
    def load_state_dict(self, state): self.count = state["count"]

def train(out, resume, delay):
    x, y = toy_blobs(200, 4, 8, std=1.5, seed=0)
    ds = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 4))   # dropout: RNG state matters
    cfg = TrainConfig(epochs=4, batch_size=16, optimizer="adam", lr=1e-2, scheduler="cosine", warmup_steps=5, out_dir=out,
                      every_n_steps=5, resume=resume, deterministic=True, progress=False, log_every_n_steps=1, monitor="val_acc")
    counter = StepCounter()
    Trainer(model, ds, val_data=ds, config=cfg, plugins=[Slow(), counter]).fit()
    assert counter.count == 52, counter.count
    torch.save(model.state_dict(), out + "/final.pt")

train(out, resume, delay)
if reference: train(reference[0], False, 0)   # the uninterrupted run (in the same process, to save a start-up)
"""


def _losses(out):
    return [(r["step"], r["loss"]) for r in map(json.loads, (out/"logs/steps.jsonl").read_text().splitlines())]


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    script = tmp_path/"train.py"; script.write_text(RESUME_SCRIPT)
    ref, run = tmp_path/"reference", tmp_path/"killed"
    proc = subprocess.Popen([sys.executable, str(script), str(run), "0", "0.1"], env=ENV)
    target = run/"checkpoints/step-000000020.pt"     # epoch 2, 7 of 13 batches done: a mid-epoch checkpoint
    deadline = time.time() + 90
    while not target.exists() and proc.poll() is None and time.time() < deadline: time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL); proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (run/"final.pt").exists()
    latest = load_checkpoint(list_checkpoints(run/"checkpoints")[-1])
    assert latest["step"] == 20 and latest["batch_in_epoch"] == 7 and latest["plugins"]["StepCounter"] == {"count": 20}

    subprocess.run([sys.executable, str(script), str(run), "1", "0", str(ref)], env=ENV, check=True, timeout=120)
    expected, got = torch.load(ref/"final.pt"), torch.load(run/"final.pt")
    for k in expected: assert torch.equal(expected[k], got[k]), k
    assert _losses(run) == _losses(ref)                      # every step logged once, with the same loss
    resumed, uninterrupted = (json.loads((d/"results.json").read_text()) for d in (run, ref))
    assert resumed["best"] == {**uninterrupted["best"], "checkpoint": resumed["best"]["checkpoint"]}
    for r, u in zip(resumed["history"], uninterrupted["history"], strict=True):
        assert set(r) == set(u) and (r["step"], r["lr"], r["val_acc"]) == (u["step"], u["lr"], u["val_acc"])
        assert r["train_loss"] == pytest.approx(u["train_loss"], rel=1e-6)


def test_train_still_offers_the_names_that_moved():
    "During the transition, `lcc_nb.train` re-exports the distributed helpers and the logger (the same objects)."
    import lcc_nb.distributed, lcc_nb.train, lcc_nb.train_logs
    moved = {"launch", "gather_by_index", "all_gather_object", "broadcast_object", "is_distributed", "get_rank", "get_world_size",
             "init_distributed", "all_reduce_sum", "gather_array", "on_main"}
    for name in moved: assert getattr(lcc_nb.train, name) is getattr(lcc_nb.distributed, name), name
    assert lcc_nb.train.MetricLogger is lcc_nb.train_logs.MetricLogger
