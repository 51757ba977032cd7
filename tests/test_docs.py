"""The documentation's sources agree with the package: one version everywhere, every notebook and
guide page reachable, the README's two set-up commands. The site itself is built by `make docs`."""

import re
from pathlib import Path

import bayesmf

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_citation_file_names_the_package_version():
    text = (ROOT / "CITATION.cff").read_text()
    assert re.search(r'^cff-version: 1\.2\.0$', text, re.M)
    assert re.findall(r'^version: "([^"]+)"$', text, re.M) == [bayesmf.__version__]


def test_every_notebook_is_in_the_docs_by_glob():
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks, "notebooks/ holds no notebook"
    page = (DOCS / "notebooks.md").read_text()
    assert re.search(r"```\{toctree\}\n(:[a-z]+:.*\n)*:glob:\n(:[a-z]+:.*\n)*\nnotebooks/\*\n```", page)
    assert "notebooks" in (DOCS / "index.md").read_text()


def test_every_guide_page_is_in_the_guide_toctree():
    pages = sorted(p.stem for p in (DOCS / "guide").glob("*.md") if p.stem != "index")
    index = (DOCS / "guide" / "index.md").read_text()
    listed = re.search(r"```\{toctree\}\n(?::.*\n)*\n((?:\w+\n)+)```", index).group(1).split()
    assert sorted(listed) == pages == sorted(["data", "models", "evaluation", "experiments", "recommendation",
                                              "performance"])


def test_readme_keeps_the_two_set_up_commands_and_links_the_docs():
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set-up: two commands", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^make (\w+)", setup, re.M)
    assert commands == ["demo", "test"]
    assert "## Developers" in readme and "make docs" in readme.split("## Developers", 1)[1]
    for target in re.findall(r"\]\(((?:docs|benchmarks)/[^)#]+)\)", readme) + ["CITATION.cff", "CHANGELOG.md"]:
        assert (ROOT / target).exists(), target


def test_sources_hold_no_control_characters():
    """A docstring written through a non-raw string turns ``\\frac``, ``\\alpha`` or ``\\top`` into
    form feeds, bells and tabs: the rendered maths breaks and `make docs` fails far from the cause."""
    bad = {}
    for folder in ("bayesmf", "tests", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                found = re.findall(r"[\x00-\x09\x0b-\x1f]", line)
                if found:
                    bad[f"{path.relative_to(ROOT)}:{number}"] = found
    assert not bad, bad
