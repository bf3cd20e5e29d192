"Every reference recipe's parity table is generated from the code, consistent, and shown in its method notebook."
import importlib, json
from pathlib import Path
import pytest
from lcc_nb.parity import PARITY, check_parity, parity_rows

for _m in ("lcc_config", "cd_config", "deepcluster_config", "llb_config"): importlib.import_module(f"lcc_nb.{_m}")
NBS = Path(__file__).parents[1] / "nbs"
CLAIMS = {("lcc", "reference"): "10_lcc", ("cd", "reference"): "13_cd", ("deepcluster", "reference"): "12_deepcluster",
          ("deepcluster", "facebook"): "12_deepcluster", ("llb", "reference"): "15_llb"}

@pytest.mark.parametrize("key", sorted(CLAIMS), ids="-".join)
def test_recipe_matches_its_parity_table(key):
    assert key in PARITY, f"no parity table registered for {key}"
    check_parity(*key)
    assert len(parity_rows(*key)) >= 5

def _sources(stem:str, kind:str) -> str:
    nb = json.loads(next(NBS.glob(f"{stem}*.ipynb")).read_text())
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == kind)

@pytest.mark.parametrize("key", sorted(CLAIMS), ids="-".join)
def test_method_notebook_shows_the_generated_table(key):
    method, recipe = key
    code = _sources(CLAIMS[key], "code")
    assert f'parity_markdown("{method}"' in code and (recipe == "reference" or f'"{recipe}"' in code)

@pytest.mark.parametrize("stem", sorted(set(CLAIMS.values())))
def test_no_hand_written_parity_claim(stem):
    "A Markdown table or sentence claiming sameness with the original would drift from the code: generate it instead."
    text = _sources(stem, "markdown").lower()
    for claim in ("same meaning", "the reference's defaults", "| same |", "identical to the reference's settings"):
        assert claim not in text, f"{stem}: hand-written parity claim {claim!r}; use lcc_nb.parity.parity_markdown"
