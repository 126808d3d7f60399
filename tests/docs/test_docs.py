"""The docs cannot rot: the site builds with warnings as errors, every ```python block of the
README and of docs/ runs, and the README's two commands are the ones CI and pyproject use.

Blocks of one page run in order in one namespace, in a temporary working directory where
`../shared/data` is the real data (`$KRS_DATA_DIR` or `../shared/data` beside the repository)
and `photo.jpg` is a real photo. A block that must not run (a download, a photo of yours, a
GPU job) is fenced ```python {.no-run} and opens with a `# not run: <reason>` comment.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, shared_data_dir

FENCE = re.compile(r"^```(?P<info>.*)$")
NO_RUN_INFO = "python {.no-run}"
NO_RUN_REASON = re.compile(r"^# not run: \S")
# The photo examples read `photo.jpg`; the docs test gives them this COCO val2017 image.
PHOTO = Path("coco-mini", "val2017", "000000000139.jpg")
MAIN_JOB = "pip install . && python -m detection demo --out demo_output"
TEST_COMMAND = (
    'pip install ".[test]" && pytest && KERAS_BACKEND=jax pytest -m "jax and not tf_only"'
)


@dataclass(frozen=True)
class Block:
    page: str  # path relative to the repository
    index: int  # 0-based among the page's fenced blocks
    line: int  # 1-based line of the opening fence
    info: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[str]:
    """README.md and every Markdown page under docs/ (linked folders such as docs/results are
    other files' measurements, not pages with code, so they are not walked)."""
    found = ["README.md"]
    for root, dirs, files in os.walk(REPO / "docs"):
        dirs[:] = sorted(d for d in dirs if not (Path(root) / d).is_symlink())
        found += sorted(str((Path(root) / f).relative_to(REPO)) for f in files if f.endswith(".md"))
    return found


def blocks(page: str, text: str | None = None) -> list[Block]:
    """The fenced code blocks of a page (read from the repository unless `text` is given); an
    unclosed fence is an error naming its line."""
    if text is None:
        text = (REPO / page).read_text(encoding="utf-8")
    lines = text.split("\n")
    found, start, info = [], None, ""
    for number, text in enumerate(lines, 1):
        match = FENCE.match(text)
        if not match:
            continue
        if start is None:
            start, info = number, match["info"].strip()
        else:
            code = "\n".join(lines[start : number - 1]) + "\n"
            found.append(Block(page, len(found), start, info, code))
            start = None
    if start is not None:
        raise ValueError(f"{page}:{start}: code fence is never closed")
    return found


ALL = [block for page in pages() for block in blocks(page)]
RUN = [b for b in ALL if b.info == "python"]
NO_RUN = [b for b in ALL if b.info == NO_RUN_INFO]


def test_the_fence_parser_sees_run_and_no_run_blocks_and_refuses_an_open_fence() -> None:
    text = "a\n```python\nx = 1\n```\n```python {.no-run}\n# not run: why\n```\n```bash\nls\n```\n"
    found = blocks("page.md", text)
    assert [(b.line, b.info, b.code) for b in found] == [
        (2, "python", "x = 1\n"),
        (5, NO_RUN_INFO, "# not run: why\n"),
        (8, "bash", "ls\n"),
    ]
    with pytest.raises(ValueError, match=r"page.md:3: code fence is never closed"):
        blocks("page.md", "a\n\n```python\nx = 1\n")


def test_every_python_block_is_run_or_marked_not_run() -> None:
    """A block whose info string says python in another way would silently escape the test."""
    odd = [
        f"{b.id} ```{b.info}"
        for b in ALL
        if "py" in b.info and b.info not in ("python", NO_RUN_INFO)
    ]
    assert odd == [], f"use ```python or ```{NO_RUN_INFO}: {odd}"
    assert len(RUN) >= 10, f"only {len(RUN)} python blocks found: is the fence parser broken?"
    assert len(NO_RUN) <= len(RUN) // 2, f"{len(NO_RUN)} blocks not run against {len(RUN)} run"


@pytest.mark.parametrize("block", NO_RUN, ids=lambda b: b.id)
def test_a_block_not_run_says_why(block: Block) -> None:
    first = block.code.split("\n", 1)[0]
    assert NO_RUN_REASON.match(first), (
        f"{block.id}: a no-run block opens with '# not run: <reason>'"
    )


# Per page: the namespace its blocks share, its working directory, the first block that failed.
_NAMESPACES: dict[str, dict] = {}
_WORKDIRS: dict[str, Path] = {}
_FAILED: dict[str, str] = {}


def _workdir(page: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page's working directory, beside a `shared/data` link to the real data."""
    if page not in _WORKDIRS:
        root = tmp_path_factory.mktemp(Path(page).stem)
        work = root / "work"
        work.mkdir()
        data = shared_data_dir()
        if data is not None:
            (root / "shared").mkdir()
            (root / "shared" / "data").symlink_to(data.resolve(), target_is_directory=True)
            if (data / PHOTO).is_file():
                shutil.copy(data / PHOTO, work / "photo.jpg")
        _WORKDIRS[page] = work
    return _WORKDIRS[page]


@pytest.mark.parametrize("block", RUN, ids=lambda b: b.id)
def test_python_block_runs(block: Block, tmp_path_factory, monkeypatch) -> None:
    if block.page in _FAILED:
        pytest.fail(f"an earlier block of this page failed ({_FAILED[block.page]})")
    text = (REPO / block.page).read_text(encoding="utf-8")
    if ("shared/data" in text or "photo.jpg" in text) and shared_data_dir() is None:
        pytest.skip("real data not found: set KRS_DATA_DIR or place it at ../shared/data")
    work = _workdir(block.page, tmp_path_factory)
    monkeypatch.chdir(work)
    # Converted checkpoints and decoded data go to the page's folder, not the user's caches.
    monkeypatch.setenv("KRS_WEIGHTS_DIR", str(work.parent / "weights"))
    monkeypatch.setenv("KRS_CACHE_DIR", str(work.parent / "cache"))
    namespace = _NAMESPACES.setdefault(block.page, {"__name__": "__docs__"})
    try:
        exec(compile(block.code, block.id, "exec"), namespace)
    except BaseException:
        _FAILED[block.page] = block.id
        raise


def _bash_lines(page: str) -> list[str]:
    return [line for b in blocks(page) if b.info == "bash" for line in b.code.splitlines()]


def test_the_readme_gives_the_two_commands_ci_and_pyproject_use() -> None:
    readme = _bash_lines("README.md")
    assert MAIN_JOB in readme and TEST_COMMAND in readme, readme
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert ci[-1] == TEST_COMMAND, ".ci/run must end with the README's test command"
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    test_extra = re.search(r"^test = \[(.*?)\]$", pyproject, re.M | re.S)
    assert test_extra and "docs" in test_extra[1], "the test extra must install the docs extra"
    assert re.search(r"^docs = \[.*mkdocs-material.*mkdocstrings\[python\]", pyproject, re.M)
    cli = (REPO / "detection" / "cli.py").read_text(encoding="utf-8")
    assert '"demo"' in cli and '"--out"' in cli, "python -m detection demo --out must exist"


def test_the_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "site" / "api" / "detection-evaluation" / "index.html").is_file()
    html = (tmp_path / "site" / "api" / "detection-evaluation" / "index.html").read_text()
    assert 'id="detection.evaluation.voc_ap"' in html, "the API reference lost voc_ap"


def test_every_relative_link_of_the_readme_resolves() -> None:
    """mkdocs checks the site's links; the README is outside the site, so it is checked here."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\((?!https?://|#)([^)#\s]+)", readme)
    assert len(targets) >= 10, targets
    missing = [t for t in targets if not (REPO / t).exists()]
    assert missing == [], f"README.md links to missing files: {missing}"


def test_every_repository_path_the_pages_name_exists() -> None:
    """A page that cites `tests/...py`, `benchmarks/...py` or `examples/...py` as evidence must
    name a file that exists (files move; the prose must follow them)."""
    cited = re.compile(r"\b((?:tests|benchmarks|examples|keras_resnet_suite|detection)/[\w/]+\.py)\b")
    missing = sorted({f"{page}: {path}" for page in pages()
                      for path in cited.findall((REPO / page).read_text(encoding="utf-8"))
                      if not (REPO / path).exists()})
    assert missing == [], f"pages cite files that do not exist: {missing}"
