# Set-up is part of every target: a fresh clone needs only python3 (>= 3.11) and make.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q

.PHONY: study test bench clean venv venv-dev

$(VENV)/.base:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0
	touch $@

$(VENV)/.installed: $(VENV)/.base pyproject.toml
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.base pyproject.toml
	$(PIP) install -e '.[dev]'
	touch $@

venv: $(VENV)/.installed
venv-dev: $(VENV)/.installed-dev

## The main job: train a VAE on the embedded digits set (no download), then diagnose its latent space.
study: venv
	$(VENV)/bin/vaelab train --dataset digits --arch 64-128-128-8 --epochs 40 --batch-size 64 \
		--lr 2e-3 --seed 0 --snapshot-every 10 --out runs --name digits-demo --overwrite
	$(VENV)/bin/vaelab diagnose runs/digits-demo --quick
	$(VENV)/bin/vaelab analyze runs/digits-demo --only probes,interpolation
	@echo "figures: runs/digits-demo/figures/   measurements: runs/digits-demo/analysis/"

test: venv-dev
	$(PY) -m pytest -q

bench: venv-dev
	$(PY) benchmarks/train_epoch.py

clean:
	rm -rf $(VENV) runs build src/*.egg-info .pytest_cache
