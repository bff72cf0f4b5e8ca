"""The documentation site builds with `mkdocs build --strict`, as `make docs` runs it: a broken link, a missing page, a
page left out of the nav, or an API reference to an object that does not exist fails the suite."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS_TOOLS = {"mkdocs": "mkdocs", "material": "mkdocs-material", "mkdocstrings": "mkdocstrings",
              "mkdocstrings_handlers.python": "mkdocstrings-python"}


def _missing_tools() -> list[str]:
    missing = []
    for module, package in DOCS_TOOLS.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # the parent package of a dotted name is missing
            found = False
        if not found:
            missing.append(package)
    return missing


def test_docs_build_strict(tmp_path: Path) -> None:
    missing = _missing_tools()
    if missing:
        pytest.skip(f"the docs tools are not installed ({', '.join(missing)}); pip install -e '.[dev]' installs them")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
                           "--site-dir", str(site)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=500)
    seconds = time.perf_counter() - start
    log = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines() if not line.startswith("INFO"))
    assert proc.returncode == 0, f"mkdocs build --strict failed after {seconds:.1f} s:\n{log}"
    print(f"mkdocs build --strict: {seconds:.1f} s")

    # Offline: pages are files (use_directory_urls: false), so site/index.html opens from disk and links work.
    assert (site / "index.html").is_file()
    assert (site / "getting-started.html").is_file()
    # Every reproduction page written by `vaelab reproduction` is part of the site.
    for page in (ROOT / "docs" / "reproductions").glob("*/README.md"):
        assert (site / "reproductions" / page.parent.name / "index.html").is_file(), page
    # The API reference was generated from the docstrings.
    assert "vaelab.config.RunConfig" in (site / "reference" / "config.html").read_text(encoding="utf-8")
