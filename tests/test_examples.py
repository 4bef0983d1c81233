"""Every example of the README and of the docs runs, as written, on a small demo beamtime
(issue 21 item 7, issue 24 item 5), so the docs cannot drift from the code.

**What is an example.** A fenced block whose language is ``bash``, ``sh``, ``console`` or
``python`` in ``README.md`` or ``docs/**/*.md``. Other fences (``text``, ``json``,
``ini``, none) are not run; the generated pages in ``docs/cli/`` hold ``--help`` output in
``text`` fences, and a test below keeps them so.

**How it runs.** Each example gets a fresh folder holding what it is *given* (below; by
default ``demo/``: the demo beamtime of ``python -m saxs_pipeline.demo.beamtime . -n 4``,
made once per session and copied), and runs there as real processes, with this
environment's ``bin`` first on ``PATH``, stdin from ``/dev/null`` and a timeout:

* ``bash``/``sh``: the block is a ``bash`` script under ``set -euo pipefail``; jobs it
  started in the background (``cmd &``) are listed when it exits, and the test stops each
  one by its PID (SIGTERM, then SIGKILL after a grace).
* ``console``: lines starting with ``$ `` are the commands (run as above); every other
  line is output that must appear in what the commands print (stdout and stderr), ``…``
  matching anything.
* ``python``: the block is a script run by this environment's Python (``MPLBACKEND=Agg``).

**Markers.** An HTML comment on the line right above the fence, invisible in the
rendered page, says what the block needs and what it makes::

    <!-- example: DIRECTIVE; DIRECTIVE; ... -->

=========================  ==================================================================
``skip (REASON)``          not run (it needs a detector, a beamline, many hosts, ...);
                           reported as a skip with its reason
``xfail (REASON)``         run, expected to fail until REASON is resolved (a pass is XPASS)
``slow``                   run in CI (``$CI`` set) or with ``SAXS_EXAMPLES=all``; skipped
                           locally otherwise
``given nothing``          the folder starts empty
``given demo``             the folder holds ``demo/`` (the default)
``given reduced``          ``demo/`` and its reduction, ``demo/work/`` (``saxsdog
                           --nxcansas -c demo/calibration.json demo/data``)
``creates PATH ...``       paths (relative to the folder; glob patterns allowed) that must
                           exist afterwards
``exit N``                 the exit status expected (default 0)
``ports N ...``            port numbers written in the block, each replaced by a free
                           loopback port before it runs (tests run beside each other)
``timeout SECONDS``        how long the block may take (default 150)
=========================  ==================================================================

A block without a marker runs given ``demo/`` and must exit 0. The tolerance held: none on
the outcome (exit status, every ``creates`` path, every console output line); timing is not
asserted, only bounded by the timeout.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNNABLE = {"bash", "sh", "console", "python"}
DEFAULT_TIMEOUT = 150.0
STOP_GRACE_S = 20.0

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")
MARKER = re.compile(r"^\s*<!--\s*example:(?P<body>.*?)-->\s*$")


@dataclass
class Example:
    path: str  # relative to the repository
    line: int  # the fence's line, 1-based
    lang: str
    code: str
    skip: str | None = None
    xfail: str | None = None
    slow: bool = False
    given: str = "demo"
    creates: list[str] = field(default_factory=list)
    exit: int = 0
    ports: list[int] = field(default_factory=list)
    timeout: float = DEFAULT_TIMEOUT

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


class MarkerError(ValueError):
    pass


def _apply(example: Example, body: str, where: str) -> None:
    # ";" separates directives, except inside a reason's parentheses
    for part in (p.strip() for p in re.split(r";(?![^()]*\))", body)):
        if not part:
            continue
        word, _, rest = part.partition(" ")
        rest = rest.strip()
        reason = rest[1:-1] if rest.startswith("(") and rest.endswith(")") else rest
        if word == "skip":
            example.skip = reason or "marked skip"
        elif word == "xfail":
            example.xfail = reason or "marked xfail"
        elif word == "slow" and not rest:
            example.slow = True
        elif word == "given" and rest in ("nothing", "demo", "reduced"):
            example.given = rest
        elif word == "creates" and rest:
            example.creates += rest.split()
        elif word == "exit" and rest.isdigit():
            example.exit = int(rest)
        elif word == "ports" and all(p.isdigit() for p in rest.split()) and rest:
            example.ports += [int(p) for p in rest.split()]
        elif word == "timeout" and re.fullmatch(r"\d+(\.\d+)?", rest):
            example.timeout = float(rest)
        else:
            raise MarkerError(f"{where}: unknown example directive {part!r}")


def parse(text: str, path: str) -> list[Example]:
    """The runnable blocks of one Markdown file, with their markers applied."""
    lines = text.splitlines()
    found: list[Example] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent = m["fence"], m["indent"]
        lang = m["info"].strip().split(" ")[0].lower()
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        if lang in RUNNABLE:
            body = [ln[len(indent):] if ln.startswith(indent) else ln.lstrip() for ln in lines[i + 1:end]]
            example = Example(path, i + 1, lang, "\n".join(body) + "\n")
            j = i - 1
            while j >= 0 and MARKER.match(lines[j]):
                _apply(example, MARKER.match(lines[j])["body"], f"{path}:{j + 1}")
                j -= 1
            found.append(example)
        i = end + 1
    return found


def documents() -> list[Path]:
    docs = sorted(p for p in (ROOT / "docs").rglob("*.md") if "cli" not in p.relative_to(ROOT / "docs").parts)
    return [ROOT / "README.md", *docs]


def all_examples() -> list[Example]:
    return [ex for doc in documents() for ex in parse(doc.read_text(), str(doc.relative_to(ROOT)))]


EXAMPLES = all_examples()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MPLBACKEND"] = "Agg"
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("SAXSDOG_NETWORK", None)  # an example names its network config itself
    return env


def _stop(pid: int) -> None:
    """Stop a process an example left running, by its PID: SIGTERM, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _script(example: Example, pidfile: Path) -> tuple[list[str], list[str]]:
    """The command line that runs the block, and the output lines a console block expects."""
    code = example.code
    for port in example.ports:
        code = re.sub(rf"\b{port}\b", str(_free_port()), code)
    expected: list[str] = []
    if example.lang == "python":
        return [sys.executable, "-c", code], expected
    if example.lang == "console":
        commands = []
        for line in code.splitlines():
            if line.startswith("$ "):
                commands.append(line[2:])
            elif line.strip():
                expected.append(line.strip())
        code = "\n".join(commands) + "\n"
    # Background jobs are listed on exit so that the test stops them by PID.
    wrapper = (f"trap 'jobs -p > {shlex.quote(str(pidfile))}' EXIT\n"
               "set -euo pipefail\n" + code)
    return ["bash", "-c", wrapper], expected


def _run(cmd: list[str], cwd: Path, timeout: float, env: dict[str, str]) -> subprocess.CompletedProcess:
    # Output goes to a file, not a pipe: a background job keeps a pipe open after the block
    # ends, and the block's end is what we wait for.
    log = cwd.parent / f"{cwd.name}.out"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the block's own process group, by its PID
            proc.wait(timeout=30)
            pytest.fail(f"did not finish within {timeout:g} s; output:\n{log.read_text()[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, log.read_text(), "")


@pytest.fixture(scope="session")
def given_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The folders examples start from, made once by the same commands the docs show."""
    base = tmp_path_factory.mktemp("examples-given")
    env = _env()
    demo = base / "demo-set"
    demo.mkdir()
    done = _run([sys.executable, "-m", "saxs_pipeline.demo.beamtime", ".", "-n", "4"], demo, 120, env)
    assert done.returncode == 0, done.stdout
    reduced = base / "reduced-set"
    shutil.copytree(demo, reduced)
    done = _run(["saxsdog", "-S", "--nxcansas", "-c", "demo/calibration.json", "demo/data"], reduced, 180,
                env)
    assert done.returncode == 0, done.stdout
    assert (reduced / "demo" / "work" / "data.zarr").is_dir()
    return {"demo": demo, "reduced": reduced}


def _run_slow() -> bool:
    return bool(os.environ.get("CI")) or os.environ.get("SAXS_EXAMPLES") == "all"


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_example_runs(example: Example, given_dirs: dict[str, Path], tmp_path: Path,
                      request: pytest.FixtureRequest) -> None:
    if example.skip:
        pytest.skip(f"{example.id}: {example.skip}")
    if example.slow and not _run_slow():
        pytest.skip(f"{example.id}: slow (runs in CI, or with SAXS_EXAMPLES=all)")
    if example.xfail:
        request.node.add_marker(pytest.mark.xfail(reason=example.xfail, strict=False))
    work = tmp_path / "here"
    if example.given == "nothing":
        work.mkdir()
    else:
        shutil.copytree(given_dirs[example.given], work)
    pidfile = tmp_path / "background.pids"
    cmd, expected = _script(example, pidfile)
    try:
        done = _run(cmd, work, example.timeout, _env())
    finally:
        if pidfile.exists():
            for pid in (int(p) for p in pidfile.read_text().split()):
                _stop(pid)
    shown = f"{example.id} ({example.lang}), exit {done.returncode}; output:\n{done.stdout[-4000:]}"
    assert done.returncode == example.exit, shown
    for line in expected:
        pattern = ".*".join(re.escape(part) for part in line.split("…"))
        assert re.search(pattern, done.stdout), f"expected output line not printed: {line!r}\n{shown}"
    for pattern in example.creates:
        assert list(work.glob(pattern)), f"{pattern} was not created\n{shown}"


def test_the_docs_have_examples_and_their_markers_parse() -> None:
    # Collecting them already parsed every marker (an unknown directive raises there).
    assert len(EXAMPLES) >= 20
    assert any(e.path == "README.md" for e in EXAMPLES)


def test_generated_cli_pages_hold_no_runnable_block() -> None:
    for page in sorted((ROOT / "docs" / "cli").glob("*.md")):
        assert not parse(page.read_text(), str(page)), f"{page}: --help belongs in a text fence"


def test_markers_are_checked() -> None:
    text = ("<!-- example: given reduced; creates a.chi b/*.png; exit 2; ports 9723 -->\n"
            "```console\n$ saxsdog x\nsaxsdog: error: …\n```\n")
    (ex,) = parse(text, "t.md")
    assert (ex.given, ex.creates, ex.exit, ex.ports, ex.lang) == ("reduced", ["a.chi", "b/*.png"], 2,
                                                                   [9723], "console")
    with pytest.raises(MarkerError, match="unknown example directive"):
        parse("<!-- example: given everything -->\n```bash\ntrue\n```\n", "t.md")


def _resolves(dotted: str) -> bool:
    import importlib

    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def test_module_paths_named_in_the_docs_exist() -> None:
    # Modules move (split by responsibility); a page naming an old path would mislead.
    named: set[str] = set()
    files: set[str] = set()
    for doc in documents():
        text = doc.read_text()
        named |= set(re.findall(r"saxs_pipeline(?:\.[A-Za-z_]\w*)+", text))
        files |= set(re.findall(r"`((?:saxs_pipeline/)?[a-z]+/[a-z_]+\.py)`", text))
    assert named, "no module path found: the pattern is wrong"
    missing = sorted(n for n in named if not _resolves(n.rstrip(".")))
    missing += sorted(f for f in files if not (ROOT / f).exists() and not (ROOT / "saxs_pipeline" / f).exists())
    assert not missing, f"named in the docs but not in the package: {missing}"
