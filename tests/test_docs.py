"""The documentation site builds strictly: a broken link or anchor, a page missing from the
navigation or a navigation entry without a page fails the build (mkdocs.yml's `validation`).
Its examples run in test_readme.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[1]


def test_the_site_builds_strictly(tmp_path):
    mkdocs = Path(sys.executable).with_name("mkdocs")
    built = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": str(mkdocs.parent)},
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert (tmp_path / "site" / "operate" / "index.html").is_file()


def test_every_page_is_in_the_navigation_and_the_readme_links_to_each():
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    pages = {page for entry in nav for page in entry.values()}
    assert pages == {p.name for p in (ROOT / "docs").glob("*.md")}
    readme = (ROOT / "README.md").read_text()
    assert [p for p in sorted(pages - {"index.md"}) if f"](docs/{p})" not in readme] == []


def test_the_readme_fits_a_newcomers_screen_or_two():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
