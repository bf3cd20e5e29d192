"The panels outside the notebook: a notebook with all three survives a papermill run, and they drive like a user."
import nbformat
import numpy as np
import papermill
import pytest

PANELS_NOTEBOOK = [
    ("parameters", "n_samples = 120"),
    ("", """import numpy as np, pandas as pd, torch
from torch.utils.data import Subset
from lcc_nb.data import get_dataset
from lcc_nb.testing import TinyCNN
from lcc_nb.panels import CalibrationPanel, LatentExplorer, LimePanel
digits = get_dataset("digits")
small = Subset(digits, range(n_samples)); small.targets, small.classes = digits.targets[:n_samples], digits.classes
torch.manual_seed(0)
cnn = TinyCNN()"""),
    ("", """explorer = LatentExplorer(cnn, small, submodules=["features", "fc1"])
explorer"""),
    ("", """lime = LimePanel(cnn, small, num_samples=100)
lime"""),
    ("", """sweep = pd.DataFrame([dict(epsilon=e, gamma=g, llc_mean=10 * e * g, mala_acceptance=1 - 100 * e, recommended=(e, g) == (1e-4, 10.0))
                      for e in (1e-4, 1e-3) for g in (1.0, 10.0)])
calibration = CalibrationPanel(sweep=sweep)
calibration"""),
]


def write_panels_notebook(path, extra_cells=()):
    "A notebook building the three panels on tiny digits data (cells: parameters, setup, explorer, LIME, calibration)."
    nb = nbformat.v4.new_notebook()
    for tag, source in list(PANELS_NOTEBOOK) + [("", c) for c in extra_cells]:
        cell = nbformat.v4.new_code_cell(source)
        if tag: cell.metadata["tags"] = [tag]
        nb.cells.append(cell)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_panels_survive_papermill(tmp_path):
    checks = """explorer.controls["colour_by"].value = "cluster"
assert explorer.figure.layout.title.text.startswith("features · pca · 10 clusters"), explorer.figure.layout.title.text
lime.controls["target"].value = 3
assert lime.state()["explained"] == "class 3"
calibration.controls["value"].value = "mala_acceptance"
assert calibration.figure.layout.title.text == "mala_acceptance over epsilon × gamma"
print("panels ok")"""
    src = write_panels_notebook(tmp_path / "panels.ipynb", [checks])
    out = papermill.execute_notebook(str(src), str(tmp_path / "out.ipynb"), parameters=dict(n_samples=80),
                                     kernel_name="python3", cwd=str(tmp_path), progress_bar=False)
    views = [c.source.splitlines()[-1] for c in out.cells for o in c.get("outputs", [])
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {}) and o["data"]["text/plain"].startswith("VBox")]
    assert views == ["explorer", "lime", "calibration"]      # each panel displayed itself as a widget
    assert "panels ok" in "".join(o.get("text", "") for o in out.cells[-1].outputs)
    assert "n_samples = 80" in out.cells[1].source            # papermill injected the parameters


def test_explorer_drives_like_a_user():
    from lcc_nb.panels import LatentExplorer
    from lcc_nb.testing import toy_blobs
    x, y = toy_blobs(150, k=3, dim=6)
    ex = LatentExplorer(latents={"raw": x, "squared": x ** 2}, labels=y, class_names=["ant", "bee", "cat"])
    assert [t.name for t in ex.figure.data] == ["ant", "bee", "cat"]
    ex.controls["layer"].value = "squared"
    assert ex.state()["title"].startswith("squared · pca · true label")
    ex.controls["colour_by"].value = "cluster"; ex.controls["n_clusters"].value = 5
    assert [t.name for t in ex.figure.data] == ["0", "1", "2", "3", "4"]
    ex.click(4, 0)
    assert ex.state()["clicked"] == int(ex.figure.data[4].customdata[0][0])
    ex.lasso({0: list(range(len(ex.figure.data[0].x)))})
    assert sorted(ex.state()["selected"]) == sorted(int(c[0]) for c in ex.figure.data[0].customdata)
