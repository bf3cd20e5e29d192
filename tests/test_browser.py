"""Real-browser checks of the panels with Debian's Chromium driven by Playwright (never `playwright install`):
the live panels in JupyterLab react to a control through their Python callbacks, and the executed notebook exported
to static HTML, with the widget JavaScript served locally, shows the figures without page errors.
Every non-local request is blocked and reported. Skipped, with the reason, where no Chromium is installed."""
import contextlib, functools, http.server, os, shutil, signal, socket, subprocess, sys, tarfile, threading, time, urllib.request, warnings
from pathlib import Path
from urllib.parse import urlparse

import pytest

from lcc_nb.plotting import find_chromium
from test_panels import write_panels_notebook

CHROMIUM = find_chromium()
pytestmark = [pytest.mark.browser,   # `make test` runs these alone, after the parallel part: a loaded CPU makes JupyterLab miss its timeouts
              pytest.mark.skipif(CHROMIUM is None, reason="no Chrome/Chromium found: install Debian's `chromium` "
                                 "(apt-get install -y chromium) or set BROWSER_PATH; these tests never download a browser")]
sync_api = pytest.importorskip("playwright.sync_api")

LOCAL_HOSTS = ("127.0.0.1", "localhost")
FIGURES_IN_NOTEBOOK = 3  # one FigureWidget per panel


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


class LocalOnly:
    "A Playwright route handler letting local requests through and aborting (and recording) every other one."
    def __init__(self): self.blocked = []
    def __call__(self, route):
        url = urlparse(route.request.url)
        if url.scheme in ("http", "https", "ws", "wss") and url.hostname not in LOCAL_HOSTS:
            self.blocked.append(route.request.url); return route.abort()
        return route.continue_()


@contextlib.contextmanager
def chromium_page():
    "A headless Chromium page that blocks non-local requests and records page errors: `(page, blocked, errors)`."
    guard, errors = LocalOnly(), []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            page.route("**/*", guard)
            page.on("pageerror", lambda e: errors.append(str(e)))
            yield page, guard.blocked, errors
        finally: browser.close()


@contextlib.contextmanager
def jupyterlab(root: Path):
    "JupyterLab on 127.0.0.1 (no token, no update or news checks) serving `root`; stopped by PID on exit."
    port, state = free_port(), root / ".jupyter-state"
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(state / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(state / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(state / "workspaces"), OMP_NUM_THREADS="1")
    log = open(root / "jupyterlab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
                             f"--port={port}", "--port-retries=0", f"--ServerApp.root_dir={root}",
                             "--IdentityProvider.token=", "--ServerApp.password=",
                             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.news_url=None",
                             "--LabApp.expose_app_in_browser=True"], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try: urllib.request.urlopen(f"{url}/api/status", timeout=2); break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start:\n{(root / 'jupyterlab.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield url
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try: proc.wait(timeout=20)
        except subprocess.TimeoutExpired: os.kill(proc.pid, signal.SIGKILL); proc.wait()
        log.close()


# anywidget rejects a promise when a model takes over 2 s to initialise (loading plotly.js, ~5 MB, per figure on a
# loaded machine), although the figure then renders; such errors are reported as warnings, every other one fails.
SLOW_INIT = "[anywidget] Failed to initialize model."


def real_errors(errors: list) -> list:
    slow = [e for e in errors if e == SLOW_INIT]
    if slow: warnings.warn(f"{len(slow)} anywidget model(s) took over 2 s to initialise (a slow machine); the figures were still checked")
    return [e for e in errors if e != SLOW_INIT]


def plot_titles(page) -> list:
    return page.eval_on_selector_all(".js-plotly-plot .gtitle", "els => els.map(e => e.textContent)")


def test_live_panels_in_jupyterlab(tmp_path):
    write_panels_notebook(tmp_path / "panels.ipynb")
    with jupyterlab(tmp_path) as url, chromium_page() as (page, blocked, errors):
        page.goto(f"{url}/lab/tree/panels.ipynb")
        page.wait_for_function("window.jupyterapp && window.jupyterapp.shell.currentWidget && window.jupyterapp.shell.currentWidget.sessionContext", timeout=60_000)
        page.evaluate("""async () => {
            const panel = window.jupyterapp.shell.currentWidget;
            await panel.sessionContext.ready;
            await window.jupyterapp.commands.execute('notebook:run-all-cells');
        }""")
        page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot').length >= {FIGURES_IN_NOTEBOOK}", timeout=90_000)
        page.wait_for_function("[...document.querySelectorAll('.gtitle')].some(e => e.textContent.startsWith('features · pca · true label'))", timeout=60_000)
        colour_by = page.locator(".widget-dropdown", has=page.locator("label", has_text="colour by")).locator("select")
        colour_by.select_option("cluster")                 # the user moves a control ...
        # ... and the title that only the Python callback computes (k-means NMI/ACC) appears in the page
        page.wait_for_function("[...document.querySelectorAll('.gtitle')].some(e => e.textContent.includes('10 clusters, NMI'))", timeout=60_000)
        heat = page.locator(".widget-dropdown", has=page.locator("label", has_text="heat-map")).locator("select")
        heat.select_option("mala_acceptance")
        page.wait_for_function("[...document.querySelectorAll('.gtitle')].some(e => e.textContent === 'mala_acceptance over epsilon × gamma')", timeout=60_000)
    assert not blocked, f"non-local requests were made (blocked): {blocked}"
    assert not real_errors(errors), f"page errors: {errors}"


# ---------------------------------------------------------------- static export

WIDGET_JS_PACKAGES = {"html-manager": "@jupyter-widgets/html-manager@1", "requirejs": "requirejs@2"}


@pytest.fixture(scope="session")
def widget_js() -> Path:
    """Folder with html-manager/dist/embed-amd.js and requirejs/require.js: $LCC_NB_WIDGET_JS, else a cache filled once
    from the npm registry with `npm pack` (skipped, with the reason, where npm is missing or fails)."""
    folder = Path(os.environ.get("LCC_NB_WIDGET_JS") or Path.home() / ".cache" / "lcc_nb" / "widget-js")
    if all((folder / n / "package.json").exists() for n in WIDGET_JS_PACKAGES): return folder
    if shutil.which("npm") is None: pytest.skip("the static export check needs the widget JavaScript: install npm, or set LCC_NB_WIDGET_JS")
    folder.mkdir(parents=True, exist_ok=True)
    for name, spec in WIDGET_JS_PACKAGES.items():
        done = subprocess.run(["npm", "pack", spec, "--silent"], cwd=folder, capture_output=True, text=True, timeout=180)
        if done.returncode: pytest.skip(f"`npm pack {spec}` failed: {done.stderr[-500:]}")
        tgz = folder / done.stdout.strip().splitlines()[-1]
        with tarfile.open(tgz) as t: t.extractall(folder / f".{name}", filter="data")
        shutil.rmtree(folder / name, ignore_errors=True); (folder / f".{name}" / "package").rename(folder / name)
        tgz.unlink(); (folder / f".{name}").rmdir()
    return folder


class WidgetAssets(http.server.SimpleHTTPRequestHandler):
    "Serves the exported page and its JavaScript; `/cdn/<module>@<version>/dist/index.js` of a widget module from its local AMD build."
    modules, assets = {}, None
    def translate_path(self, path):
        parts = urlparse(path).path.split("/")
        if len(parts) > 3 and parts[1] == "cdn" and parts[2].split("@")[0] in self.modules: return str(self.modules[parts[2].split("@")[0]])
        if self.assets is not None and (self.assets / parts[-1]).is_file(): return str(self.assets / parts[-1])  # html-manager's fonts
        return super().translate_path(path)
    def log_message(self, *args): pass


@contextlib.contextmanager
def serve(folder: Path, modules: dict, assets: Path):
    handler = type("Handler", (WidgetAssets,), {"modules": modules, "assets": assets})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True); thread.start()
    try: yield f"http://127.0.0.1:{server.server_address[1]}"
    finally: server.shutdown(); server.server_close()


def test_static_html_export_shows_figures(tmp_path, widget_js):
    import anywidget, nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter
    nb = nbformat.read(write_panels_notebook(tmp_path / "panels.ipynb"), as_version=4)
    NotebookClient(nb, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}, store_widget_state=True, timeout=300).execute()
    assert "widgets" in nb.metadata
    site = tmp_path / "site"; site.mkdir()
    for name in WIDGET_JS_PACKAGES: (site / name).symlink_to(widget_js / name)
    anywidget_amd = Path(sys.prefix) / "share" / "jupyter" / "nbextensions" / "anywidget" / "index.js"
    with serve(site, {"anywidget": anywidget_amd}, widget_js / "html-manager" / "dist") as base:
        exporter = HTMLExporter(template_name="lab", require_js_url=f"{base}/requirejs/require.js",
                                widget_renderer_url=f"{base}/html-manager/dist/embed-amd.js",
                                jupyter_widgets_base_url=f"{base}/cdn/", mathjax_url=f"{base}/no-mathjax.js")
        body, _ = exporter.from_notebook_node(nb)
        # third-party widget modules (anywidget, behind plotly's FigureWidget) from the local server, never a CDN
        body = body.replace("<head>", f'<head>\n<script data-jupyter-widgets-cdn="{base}/cdn/" data-jupyter-widgets-cdn-only></script>', 1)
        (site / "index.html").write_text(body)
        with chromium_page() as (page, blocked, errors):
            page.goto(f"{base}/index.html")
            page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot').length >= {FIGURES_IN_NOTEBOOK}", timeout=60_000)
            titles = plot_titles(page)
    assert any(t.startswith("features · pca · true label") for t in titles), titles
    assert "llc_mean over epsilon × gamma" in titles
    assert not blocked, f"non-local requests were made (blocked): {blocked}"
    assert not real_errors(errors), f"page errors: {errors}"
