# Set-up is part of every target: a fresh clone needs only python3 (>= 3.11) and make.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q

.PHONY: study test soak bench docs clean venv venv-dev browser

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

## The main job: the latent-dim study (document 002) on the embedded digits set, no download; prints the report path.
study: venv
	$(VENV)/bin/vaelab study latent-dim --scale small --out studies

## Headless Chromium for the report's browser test (Debian packages; installed when missing and we may).
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing chromium and chromium-driver (Debian) for the report's browser test"; \
			apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
				|| echo "note: could not install chromium; the browser test will be skipped"; \
		else echo "note: chromium is not installed; the browser test will be skipped"; fi; \
	fi

## Two pytest-xdist workers, each given its share of the cores (tests/conftest.py), fill a 2-core machine: 987 s,
## against 1295 s when each used every core and 1622 s one at a time; tests that start a local Ray share one worker.
TEST_WORKERS ?= 2
test: venv-dev browser
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

## Long fault-injection runs (many kill points, thousands of fuzz examples); `make test` skips them.
soak: venv-dev
	$(PY) -m pytest -q -m soak tests/faults

bench: venv-dev
	$(PY) benchmarks/train_epoch.py

## The documentation site (MkDocs, Material, mkdocstrings) into site/; --strict fails on a broken link or reference.
## Open site/index.html from disk.
docs: venv-dev
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) runs studies build src/*.egg-info .pytest_cache
