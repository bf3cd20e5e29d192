"""The layout stays readable: no module over ~500 lines, no class over ~80, no function with more than ~12 parameters,
no block of six lines repeated anywhere in lcc_nb/, and dependencies that point one way."""
import ast, re
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent/"lcc_nb"
MODULES = sorted(p for p in PACKAGE.glob("*.py") if p.name != "_modidx.py")
MAX_MODULE_LINES, MAX_CLASS_LINES, MAX_PARAMETERS, WINDOW = 520, 90, 12, 6

def code_lines(path:Path) -> list[str]:
    "The module's lines without blank lines, comments and nbdev's cell markers."
    return [l for l in path.read_text().splitlines() if l.strip() and not l.lstrip().startswith("#")]

@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_size(path):
    assert len(code_lines(path)) <= MAX_MODULE_LINES, f"{path.name}: {len(code_lines(path))} lines of code; split it"

@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_classes_and_functions_stay_small(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            assert node.end_lineno - node.lineno + 1 <= MAX_CLASS_LINES, f"{path.name}: class {node.name} has {node.end_lineno - node.lineno + 1} lines"
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            count = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) - (1 if a.args and a.args[0].arg in ("self", "cls") else 0)
            assert count <= MAX_PARAMETERS, f"{path.name}: {node.name} takes {count} parameters; use a config"

def _normalised(line:str) -> str: return re.sub(r"\s+", " ", line.strip())

def test_no_repeated_blocks():
    "No six consecutive code lines appear twice in the package (imports and decorators aside)."
    seen, repeats = defaultdict(list), []
    for path in MODULES:
        lines = [_normalised(l) for l in code_lines(path)]
        for i in range(len(lines) - WINDOW + 1):
            block = tuple(lines[i:i + WINDOW])
            if any(l.startswith(("import ", "from ", "@", "__all__")) for l in block): continue
            if sum(len(l) for l in block) < 120: continue   # short generic lines (returns, closing brackets)
            seen[block].append(f"{path.name}:{i}")
    repeats = {b: where for b, where in seen.items() if len(where) > 1}
    assert not repeats, "repeated blocks:\n" + "\n".join(f"{where}: {b[0]!r}..." for b, where in list(repeats.items())[:5])

LIGHT = ("core", "config", "parity", "train_config", "data_config", "model_config", "cli", "__init__")
HEAVY = ("torch", "numpy", "timm", "transformers", "sklearn", "plotly", "pandas")

def _imports(path:Path) -> set[str]:
    tree, out = ast.parse(path.read_text()), set()
    for node in tree.body:   # module level only: imports inside functions are lazy
        if isinstance(node, ast.Import): out |= {a.name.split(".")[0] for a in node.names}
        if isinstance(node, ast.ImportFrom): out.add(("." * node.level) + (node.module or ""))
    return out

@pytest.mark.parametrize("path", [p for p in MODULES if p.stem in LIGHT or p.stem.endswith("_config")], ids=lambda p: p.name)
def test_light_modules_import_nothing_heavy(path):
    heavy = {m for m in _imports(path) if m.split(".")[0] in HEAVY and m.split(".")[0] != "numpy" or (m == "numpy" and path.stem != "core")}
    assert not heavy, f"{path.name} imports {heavy} at module level: config and CLI modules must stay light"

def test_dependencies_point_one_way():
    "Method and panel modules import no CLI or run code; config knows no method; cli imports methods only lazily."
    for path in MODULES:
        imported = {m.lstrip(".") for m in _imports(path)}
        if path.stem not in ("cli", "runs", "docs"): assert not imported & {"cli", "runs"}, f"{path.name} imports {imported & {'cli', 'runs'}}"
    assert {m.lstrip(".") for m in _imports(PACKAGE/"config.py")} <= {"__future__", "argparse", "ast", "dataclasses", "inspect", "re", "pathlib", "typing", "core"}
