"PNG export through kaleido with a real Chromium (skipped, with the reason, when none is installed)."
import pytest

from lcc_nb.plotting import class_scatter, find_chromium, save_figure
from lcc_nb.testing import toy_blobs


@pytest.mark.skipif(find_chromium() is None, reason="no Chrome/Chromium found (apt-get install -y chromium, or set BROWSER_PATH)")
def test_save_figure_png(tmp_path):
    x, y = toy_blobs(60, k=3, dim=2)
    png = save_figure(class_scatter(x, y, title="blobs"), tmp_path / "blobs.png", width=300, height=200)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == 300 and int.from_bytes(data[20:24], "big") == 200
