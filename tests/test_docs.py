"""The documentation: generated benchmark tables up to date, relative links resolve, README size.

Standard library only (no keras / tensorflow), so it runs in a fraction of a second on every backend.
"""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_LIMIT = 12_288  # bytes
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def render_docs():
    path = ROOT / "benchmarks" / "render_docs.py"
    spec = importlib.util.spec_from_file_location("render_docs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def markdown_files():
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def strip_code(text):
    """Markdown without fenced code blocks and inline code spans (links there are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def test_generated_tables_are_up_to_date():
    stale = render_docs().stale_pages()
    assert not stale, f"stale generated tables in {', '.join(stale)}: run python benchmarks/render_docs.py"


def test_relative_links_resolve():
    broken = []
    for page in markdown_files():
        for target in LINK.findall(strip_code(page.read_text())):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # absolute URL, mailto:, or an anchor in the same page
            path = target.split("#", 1)[0]
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, "broken relative links: " + "; ".join(broken)


def test_readme_size():
    size = (ROOT / "README.md").stat().st_size
    assert size <= README_LIMIT, f"README.md is {size} bytes; the limit is {README_LIMIT}"


def test_ci_runs_the_readme_test_command_verbatim():
    """README command 2 (install with the CPU build of PyTorch, then the suite per backend) is what CI runs."""
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S).group(1)
    commands = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert len(commands) == 2 and "--extra-index-url https://download.pytorch.org/whl/cpu" in commands[1]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if not line.startswith("#")]
    assert commands[1] in ci


def test_the_quickstart_time_is_one_figure():
    """README command 1 and zoo/quickstart.yaml state the same measured time (they once said 15-28 s and
    'about a minute')."""
    figure = re.compile(r"(\d+(?:-\d+)? s)\b")
    readme = figure.findall(re.search(r"# 1\..*", (ROOT / "README.md").read_text()).group(0))
    config = figure.findall((ROOT / "zoo" / "quickstart.yaml").read_text().split("\nname:")[0])
    assert readme and readme == config
