"Papermill runs, resumable sweeps and the `run`/`sweep` CLI."
import json, os, re, signal, subprocess, sys, time
from pathlib import Path

import nbformat
import pytest

from lcc_nb.runs import run_notebook, sweep, list_run_notebooks, notebook_parameters, RunError
from lcc_nb.core import ChoiceError

CLI = os.path.join(os.path.dirname(sys.executable), "lcc_nb")

def slow_notebook(path, log):
    "A run notebook that sleeps, then appends its parameters to `log` and writes metrics.json."
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("a = 1\nb = 1\nsleep = 0.0\nout_dir = 'out'", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(
                    "import json, os, time\ntime.sleep(sleep)\n"
                    f"open({str(log)!r}, 'a').write(f'{{a}},{{b}}\\n')\n"
                    "print('scored', a * 10 + b)\n"
                    "os.makedirs(out_dir, exist_ok=True)\n"
                    "json.dump({'score': a * 10 + b}, open(os.path.join(out_dir, 'metrics.json'), 'w'))")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path

def test_sweep_interrupted_and_resumed(tmp_path):
    log = tmp_path/"executions.log"
    nb = slow_notebook(tmp_path/"slow.ipynb", log)
    out = tmp_path/"sweep"
    code = (f"from lcc_nb.runs import sweep; sweep({str(nb)!r}, {{'a': [1, 2], 'b': [3, 4]}}, {str(out)!r}, "
            "base_params={'sleep': 1.5})")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.time() + 120
    first_done = lambda: any(out.glob("run-000_*/.done"))
    while time.time() < deadline and not first_done(): time.sleep(0.1)
    time.sleep(0.5)  # the second run is now inside its 1.5 s sleep: kill it mid-way
    os.killpg(proc.pid, signal.SIGKILL); proc.wait()
    finished_before = log.read_text().splitlines()
    assert finished_before == ['1,3'], finished_before
    table = sweep(nb, {"a": [1, 2], "b": [3, 4]}, out, base_params={"sleep": 1.5})
    executions = log.read_text().splitlines()
    assert len(table) == 4 and sorted(table["score"]) == [13, 14, 23, 24]
    assert sorted(executions) == ["1,3", "1,4", "2,3", "2,4"], "every run executed exactly once"
    assert (out/"sweep.csv").exists()

def test_unknown_parameter_rejected_before_running(tmp_path):
    nb = slow_notebook(tmp_path/"slow.ipynb", tmp_path/"log")
    with pytest.raises(ChoiceError, match="Valid choices: 'a', 'b', 'sleep', 'out_dir'"):
        run_notebook(nb, {"c": 1}, tmp_path/"out")
    assert not (tmp_path/"log").exists()

def test_cli_run_and_sweep(tmp_path):
    nb = slow_notebook(tmp_path/"slow.ipynb", tmp_path/"log")
    res = subprocess.run([CLI, "run", str(nb), "-p", "a", "5", "--out-dir", str(tmp_path/"r")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path/"r"/"metrics.json").read_text())["score"] == 51
    res = subprocess.run([CLI, "sweep", str(nb), "--grid", "a=1,2", "--out-dir", str(tmp_path/"s")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "11" in res.stdout and "21" in res.stdout
    res = subprocess.run([CLI, "run", str(nb), "-p", "nope", "1"], capture_output=True, text=True)
    assert res.returncode == 2 and "nope" in res.stderr

def cli(*args):
    "Run the `lcc_nb` command line; the finished process (asserting it succeeded)."
    res = subprocess.run([CLI, *map(str, args)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return res

def _ours(stderr:str) -> str:
    "stderr without the Jupyter kernel process's own log lines (its shutdown may log 'KeyboardInterrupt caught in kernel')."
    return "".join(line for line in stderr.splitlines(True) if not line.startswith("[IPKernelApp]"))

def test_cli_progress_and_quiet(tmp_path):
    "Without --quiet `run` and `sweep` show the executing cell and the notebook's output; with it, only the summary."
    nb = slow_notebook(tmp_path/"slow.ipynb", tmp_path/"log")
    loud = cli("run", nb, "-p", "a", "5", "--out-dir", tmp_path/"loud")
    assert "scored 51" in loud.stdout and "Executing" in loud.stderr and "cell" in loud.stderr, loud
    quiet = cli("run", nb, "-p", "a", "5", "--out-dir", tmp_path/"quiet", "--quiet")
    assert quiet.stdout == f"{json.dumps({'score': 51}, indent=2)}\noutputs in {(tmp_path/'quiet').resolve()}\n", quiet.stdout
    assert _ours(quiet.stderr) == "", quiet.stderr
    assert (tmp_path/"quiet"/"kernel.log").exists(), "--quiet: the kernel process's own stderr goes to kernel.log"
    loud = cli("sweep", nb, "--grid", "a=1,2", "-p", "b", "3", "--out-dir", tmp_path/"sweep_loud")
    assert "run 1/2: a=1" in loud.stderr and "run 2/2: a=2" in loud.stderr and "scored 23" in loud.stdout, loud
    quiet = cli("sweep", nb, "--grid", "a=1,2", "-p", "b", "3", "--out-dir", tmp_path/"sweep_quiet", "--quiet")
    lines = quiet.stdout.splitlines()
    assert len(lines) == 3 and lines[0].split()[:2] == ["run", "status"] and _ours(quiet.stderr) == "", quiet

# Metrics every run notebook must report in smoke mode (names from issue 9).
EXPECTED_METRICS = {
    "quickstart": {"nmi", "ari", "acc", "seconds"},
    "train_lcc": {"test_acc", "mc_fraction", "nmi", "seconds"},
    "llc_calibration": {"llc_mean", "llc_std", "seconds"},
    "llc_checkpoints": {"llc_mean", "llc_std", "seconds"},
    "deepcluster": {"nmi", "ari", "acc", "seconds"},
    "contrastive_disentangling": {"nmi_backbone", "nmi_heads", "seconds"},
    "llb": {"test_acc", "test_acc_alpha_0.5", "seconds"},   # the best checkpoint re-scored at other_alphas
    "explore_latents": {"nmi", "seconds"},
    "use_trained_model": {"linear_probe_acc", "nmi", "seconds"},
    "compare_methods": {f"{row}_{score}" for row in ("pixels", "pixels_pca", "ce", "lcc", "deepcluster", "cd", "llb")
                        for score in ("nmi", "ari", "acc", "mc_fraction", "seconds")}
                       | {"ce_test_acc", "lcc_test_acc", "llb_test_acc", "ce_llc", "lcc_llc", "seconds"},
}

@pytest.mark.parametrize("name", list_run_notebooks())
def test_run_notebook_smoke(name, tmp_path):
    params = notebook_parameters(name)
    for key in ("smoke", "out_dir", "dataset", "root"): assert key in params, f"{name} lacks parameter {key!r}"
    assert params["dataset"] == "digits"
    metrics = run_notebook(name, {"smoke": True}, tmp_path/name)
    missing = EXPECTED_METRICS.get(name, {"seconds"}) - set(metrics)
    assert not missing, f"{name}: metrics.json lacks {missing}; has {sorted(metrics)}"
    assert any(p.suffix == ".html" for p in (tmp_path/name).iterdir()), f"{name} wrote no HTML figure"
    if name == "quickstart":   # the demo's report opens offline: plotly.js and every figure are embedded in the page
        report = (tmp_path/name/"report.html").read_text()
        assert report.count("Plotly.newPlot") >= 4 and not re.search(r"<script[^>]*\bsrc=", report)
    if name == "compare_methods":   # one table with the pixel baselines as rows, one scatter per method
        report = (tmp_path/name/"report.html").read_text()
        assert report.count("Plotly.newPlot") == 5 and "raw pixels + k-means" in report and "LCC on fc1" in report
        assert all(0 <= metrics[f"{row}_nmi"] <= 1 for row in ("pixels", "ce", "lcc", "deepcluster", "cd", "llb")), metrics
        assert metrics["ce_test_acc"] > 0.5, metrics   # one epoch on digits: well above chance (0.1)
        import csv
        latents = {row["key"]: row["latent"] for row in csv.DictReader(open(tmp_path/name/"comparison.csv"))}
        assert latents["cd"] == "backbone", latents   # the features CD's heads see (after the ReLU), not the pre-ReLU fc1

@pytest.mark.parametrize("name", list_run_notebooks())
def test_every_assignment_of_a_parameters_cell_is_a_parameter(name):
    "papermill skips (with only a log line) a parameter line it cannot parse, e.g. a comment holding `=` and quotes."
    import ast
    from lcc_nb.runs import find_notebook
    cell = next(c for c in nbformat.read(str(find_notebook(name)), as_version=4).cells
                if "parameters" in c.get("metadata", {}).get("tags", []))
    assigned = [t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets]
    assert list(notebook_parameters(name)) == assigned, f"{name}: papermill sees {list(notebook_parameters(name))}"

def test_a_recipe_replaces_the_parameters_cell_and_a_given_parameter_wins(tmp_path):
    from lcc_nb.runs import executed_parameters
    metrics = run_notebook("contrastive_disentangling", {"recipe": "fashion_mnist", "smoke": True, "eval_every": 1}, tmp_path,
                           progress=False)
    used = executed_parameters(tmp_path, {})
    assert used["model_options"] == {"width": 16} and used["epochs"] == 9, used   # the recipe's, not the cell's {} and 50
    assert used["eval_every"] == 1 and used["recipe"] == "fashion_mnist", used      # given: wins over the recipe's 0
    assert "nmi_backbone" in metrics
