# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
EXTRA ?= cpu
# torch 2.14.1 + torchvision 0.29.1 are the pair that works with timm here (installed first, from local disk when present)
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
export OMP_NUM_THREADS ?= 1
export PYTHONUNBUFFERED := 1

.PHONY: install demo test test-nbs test-py check-clean check-export readme docs bench clean

$(VENV)/.installed: settings.ini setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e ".[$(EXTRA),dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/lcc_nb run quickstart --out-dir _runs/quickstart

check-clean: install
	$(BIN)/nbdev_clean
	@test -z "$$(git status --porcelain -- nbs)" || { git status --porcelain -- nbs; echo "notebooks not clean: run nbdev_clean and commit"; exit 1; }

check-export: install
	$(BIN)/nbdev_export
	@test -z "$$(git status --porcelain -- lcc_nb)" || { git status --porcelain -- lcc_nb; echo "lcc_nb/ out of sync with nbs/: run nbdev_export and commit"; exit 1; }

test-nbs: install
	$(BIN)/nbdev_test --n_workers 1 --timing

# pytest on both cores (one test file per worker), then the real-browser tests alone: under load JupyterLab misses its timeouts
test-py: install
	$(BIN)/pytest -q -n 2 --dist loadfile -m "not browser" tests
	$(BIN)/pytest -q -m browser tests

test: check-clean check-export test-nbs test-py

readme: install
	$(BIN)/jupyter nbconvert --to markdown nbs/index.ipynb --output-dir . --output README --TagRemovePreprocessor.remove_cell_tags='["hide"]'

# an offline HTML site of every notebook (executed) in _docs/: open _docs/index.html
docs: install
	$(PY) -c "from lcc_nb.docs import build_docs; build_docs()"

bench: install
	for f in bench/*.py; do $(PY) $$f; done

clean:
	rm -rf $(VENV) _runs _proc

.PHONY: data gpu-check
# Fashion-MNIST from Debian's package (apt-get install dataset-fashion-mnist) laid out under the data root
data: install
	$(PY) -c "from lcc_nb.data import fetch_dataset; print(fetch_dataset('fashion_mnist'))"

# every CUDA path once, PASS/FAIL/SKIP with timings (exits 0 with "SKIP: no CUDA" on a CPU machine)
gpu-check: install
	bash bench/gpu_check.sh $(GPU_CHECK_OUT)
