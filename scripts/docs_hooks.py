"""mkdocs hooks of the documentation site (mkdocs.yml): pages made from the repository's own
files, and links that lead somewhere on the site.

* ``architecture.md`` and ``benchmarks.md`` are ARCHITECTURE.md and BENCHMARKS.md at the
  repository's root, as they are (BENCHMARKS.md's tables are written by bench/plots.py and
  checked by tests/test_benchmarks_doc.py: one copy of each figure).
* A link from a page to a file of the repository is rewritten to the page that shows it
  (``docs/x.png`` from a root file, ``../BENCHMARKS.md`` from a page under docs/); a link to a
  file the site does not show (a script, bench/README.md) keeps its text, unlinked.
* Docstrings cross-reference with Sphinx roles (``:class:`Job```); the site shows the name as
  code, without the role.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
#: Root files shown as pages of the site: the page's path under docs/.
ROOT_PAGES = {"ARCHITECTURE.md": "architecture.md", "BENCHMARKS.md": "benchmarks.md"}
#: Where the README's sections are told on the site.
README_PAGES = {
    "": "index.md",
    "library-api": "api.md",
    "configuration": "getting-started.md",
    "command-line": "cli.md",
    "testing-your-tasks": "testing.md",
    "development": "index.md",
}

LINK = re.compile(r"(!?)\[([^\]\n]*)\]\(([^)\s]+)\)")
ROLE = re.compile(r":(?:class|func|meth|data|mod|attr|exc|obj):(?=<code>)")


def on_files(files: Files, config: Any) -> Files:
    """Add the pages made from root files."""
    for source, dest in ROOT_PAGES.items():
        text = (ROOT / source).read_text(encoding="utf-8")
        files.append(File.generated(config, dest, content=text))
    return files


def _target(page_src: str, target: str) -> str | None:
    """Where ``target``, linked from page ``page_src`` (a path under docs/), leads on the site,
    relative to the page; ``None`` for a file the site does not show."""
    path, _, anchor = target.partition("#")
    if not path or "://" in target or target.startswith("mailto:"):
        return target
    if page_src in ROOT_PAGES.values():
        repo_path = posixpath.normpath(path)  # written relative to the repository's root
    else:
        repo_path = posixpath.normpath(posixpath.join("docs", posixpath.dirname(page_src), path))
    if repo_path.startswith("docs/"):
        site_path = repo_path.removeprefix("docs/")
    elif repo_path in ROOT_PAGES:
        site_path = ROOT_PAGES[repo_path]
    elif repo_path == "README.md":
        site_path, anchor = README_PAGES.get(anchor, "index.md"), ""
    else:
        return None
    rel = posixpath.relpath(site_path, posixpath.dirname(page_src) or ".")
    return f"{rel}#{anchor}" if anchor else rel


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Rewrite links to the repository's files into links to the site's pages."""
    src = page.file.src_uri

    def fix(m: re.Match[str]) -> str:
        bang, text, target = m.groups()
        new = _target(src, target)
        if new is None:
            return text
        return f"{bang}[{text}]({new})"

    return LINK.sub(fix, markdown)


def on_page_content(html: str, page: Any, config: Any, files: Files) -> str:
    """Drop the Sphinx roles in front of cross-referenced names."""
    return ROLE.sub("", html)
