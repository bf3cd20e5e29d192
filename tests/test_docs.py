"The offline HTML site of `make docs`, built without execution."
import re
from pathlib import Path

import nbformat

from lcc_nb.docs import build_docs, docs_notebooks, nbs_folder, page_name

def test_site_has_a_page_per_notebook_and_loads_nothing_from_the_network(tmp_path):
    library, runs = sorted(nbs_folder().glob("*.ipynb")), sorted((nbs_folder()/"runs").glob("*.ipynb"))
    index = build_docs(tmp_path, execute=False, progress=False)
    links = re.findall(r'href="([^"]+)"', index.read_text())
    assert library and runs and docs_notebooks() == library + runs
    expected = [page_name(p, nbformat.read(p, as_version=4)) for p in library + runs]
    assert len(set(expected)) == len(expected) and "index.html" not in expected and all(p.startswith("runs/") for p in expected[len(library):])
    assert links == expected, set(links) ^ set(expected)
    for page in expected:
        text = (tmp_path/page).read_text()
        assert not re.findall(r"<script[^>]*\bsrc=[\"']?(?:https?:)?//", text), f"{page} loads a script from the network"
        assert re.search(r'<script src="(\.\./)?plotly\.min\.js">', text), page
    assert (tmp_path/"plotly.min.js").stat().st_size > 1_000_000
    title = nbformat.read(nbs_folder()/"runs"/"quickstart.ipynb", as_version=4).cells[0].source.splitlines()[0].lstrip("# ")
    assert f'<a href="runs/quickstart.html">{title}</a>' in index.read_text()
    assert "lcc_nb run quickstart" in (tmp_path/"runs"/"quickstart.html").read_text()
