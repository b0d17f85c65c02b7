"""The README and the docs site never lie: every code block runs here, or is
an excerpt of a file that the tests run (a snippet included from it, mostly),
or is output that a test reproduces.

Each fenced block is preceded by a marker comment saying which:
``excerpt: PATH`` (its lines appear in PATH in order; ``...`` skips lines),
``run`` (executed here), ``console: TARGET`` (the commands are replayed
against TARGET and the output compared), ``shell: TEST`` (commands a test
runs in spirit; the test file must exist and name each program), or a name
that a test of its own picks up (demo-command, test-command, timeline-*,
testing-*).
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from lifewatch import Lifewatch
from tests.support.servers import env as server_env
from tests.support.servers import free_port, http_get, uvicorn_argv, wait_for

from .pages import PAGES, ROOT, TEXT
from .test_examples import serve

BLOCK = re.compile(r"(?:<!-- (?P<marker>[^>]+?) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)\n```", re.S)
BLOCKS = [(m["marker"] or "", m["lang"], m["body"]) for m in BLOCK.finditer(TEXT)]
NAMED = {
    "demo-command": "tests/docs/test_readme.py",
    "test-command": ".ci/run",
    "timeline-example": "tests/docs/test_readme_testing.py",
    "timeline-json": "tests/docs/test_readme_testing.py",
    "testing-conftest": "tests/docs/test_readme_testing.py",
    "testing-example": "tests/docs/test_readme_testing.py",
    "overrun-log": "tests/docs/test_readme.py",
    "cli": "tests/docs/test_site.py",
}


def blocks(kind: str) -> list[tuple[str, str, str]]:
    return [b for b in BLOCKS if b[0].split(":")[0] == kind]


def test_every_block_says_how_it_is_proven() -> None:
    assert len(BLOCKS) >= 15
    for marker, _lang, body in BLOCKS:
        kind = marker.split(":")[0]
        assert kind in {"excerpt", "run", "console", "shell", "measured", *NAMED}, (
            marker,
            body[:80],
        )
    for name, where in NAMED.items():
        assert (ROOT / where).exists()
        assert name in (ROOT / where).read_text() or name in {"test-command"}, name


@pytest.mark.parametrize(
    ("path", "body"), [(m.split(":", 1)[1].strip(), b) for m, _, b in blocks("excerpt")]
)
def test_excerpt_is_in_its_file(path: str, body: str) -> None:
    source = (ROOT / path).read_text().splitlines()
    at = 0
    for line in body.splitlines():
        if not line.strip() or line.strip() == "...":
            continue
        try:
            at = source.index(line, at) + 1
        except ValueError:
            raise AssertionError(f"{path} has no line {line!r} (in this order)") from None
    # and the file itself is exercised by the tests
    tests = "".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    module = path.removesuffix(".py").replace("/", ".")
    assert path in tests or module in tests or Path(path).name in tests, path


def test_run_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAME", raising=False)  # outside Kubernetes too
    ran = 0
    for _, lang, body in blocks("run"):
        if lang == "python":
            namespace: dict[str, Any] = {"__name__": "readme"}
            exec(compile(body, "docs", "exec"), namespace)
            watches = [v for v in namespace.values() if isinstance(v, Lifewatch)]
            assert watches, "a python block in the docs makes a Lifewatch"
        else:
            assert lang == "bash"
            for command in body.splitlines():
                done = subprocess.run(shlex.split(command), cwd=ROOT, capture_output=True)
                assert done.returncode == 0, (command, done.stdout, done.stderr)
        ran += 1
    assert ran >= 2


def test_shell_blocks_name_what_their_test_runs() -> None:
    for marker, _, body in blocks("shell"):
        test = ROOT / marker.split(":", 1)[1].strip()
        text = test.read_text()
        for command in body.splitlines():
            words = [w for w in shlex.split(command.split("#")[0]) if "=" not in w]
            assert words[0] in ("rm", "mkdir", "pip") or words[0] in text, (command, test)
            if words[0] == "pip":
                continue  # pip's flags, not the script's
            for env in re.findall(r"(\w+)=", command.split("#")[0]):
                assert env in text, (env, test)
            for word in words[1:]:
                if word.startswith("--"):
                    assert word in text, (word, test)  # a flag the script has
                elif word.endswith(".py") and words[0] == "python":
                    assert (ROOT / word).exists(), word


def test_measured_blocks_are_what_their_script_prints() -> None:
    """Recorded benchmark output: the script's header and every section name."""
    measured = blocks("measured")
    assert measured
    for marker, _, body in measured:
        script = ROOT / marker.split(":", 1)[1].strip()
        source = script.read_text() + (script.parent / "timing.py").read_text()
        lines = body.splitlines()
        assert lines[0].split() == ["measurement", "median", "spread", "unit", "target", "verdict"]
        for section in (line.strip("[]") for line in lines if line.startswith("[")):
            assert section in source, section


def same(expected: Any, actual: Any) -> bool:
    """JSON equality where "..." matches anything and numbers match by type."""
    if expected == "...":
        return True
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and expected.keys() == actual.keys()
            and all(same(v, actual[k]) for k, v in expected.items())
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(same(e, a) for e, a in zip(expected, actual, strict=True))
        )
    if isinstance(expected, float) and not isinstance(expected, bool):
        return isinstance(actual, (int, float)) and not isinstance(actual, bool)
    return bool(expected == actual)


def replay(body: str, base: str) -> None:
    expected: dict[str, list[str]] = {}
    command = ""
    for line in body.splitlines():
        if line.startswith("$ "):
            command = line[2:]
            expected[command] = []
        else:
            expected[command].append(line)
    for command, lines in expected.items():
        args = shlex.split(command)
        assert args[:2] == ["curl", "-s"], command
        headers = dict(h.split(": ", 1) for flag, h in itertools.pairwise(args) if flag == "-H")
        url = args[-1].replace("localhost:8000", base.removeprefix("http://"))
        text = httpx.get("http://" + url.removeprefix("http://"), headers=headers).text
        got = text.rstrip("\n").splitlines()
        if lines and lines[0].startswith("{"):
            assert same(json.loads("\n".join(lines)), json.loads(text)), (command, text)
        else:
            assert got == lines, (command, got)


def test_console_blocks_are_what_the_app_answers() -> None:
    replayed = 0
    for marker, _, body in blocks("console"):
        target = marker.split(":", 1)[1].strip()
        if target.startswith("python "):
            done = subprocess.run(
                shlex.split(target.replace("python", sys.executable, 1)),
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
                env=server_env(),
            )
            assert done.returncode == 0, done.stderr
            produced = [json.loads(x) for x in done.stdout.splitlines() if x.startswith('{"')]
            for line in body.splitlines():
                wanted = json.loads(line)
                assert any(
                    r.keys() == wanted.keys()
                    and r["event"] == wanted["event"]
                    and r.get("phase") == wanted.get("phase")
                    for r in produced
                ), line
        else:
            with serve(target) as base:
                replay(body, base)
        replayed += 1
    assert replayed >= 2


def test_demo_command_is_the_one_test_demo_runs() -> None:
    demo = next(b for m, _, b in BLOCKS if m == "demo-command")
    assert demo.endswith("pip install -e '.[demo]' && python -m lifewatch demo")
    assert '"-m", "lifewatch", "demo"' in (ROOT / "tests" / "servers" / "test_demo.py").read_text()


def test_overrun_log_is_what_uvicorn_prints() -> None:
    """The overrun-log block: lifewatch's warning under uvicorn, for an app without logging."""
    (body,) = [b for m, _, b in BLOCKS if m == "overrun-log"]
    port = free_port()
    proc = subprocess.Popen(
        uvicorn_argv(port, "examples.blocking:app"),
        cwd=ROOT,
        env=server_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for("examples.blocking", lambda: http_get(f"http://127.0.0.1:{port}/livez"), 30)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    lines = out.splitlines()
    at = 0
    for line in body.splitlines():
        if line.strip() == "...":
            continue
        line = line.replace("/srv/app", str(ROOT))
        assert line in lines[at:], (line, out[-3000:])
        at = lines.index(line, at) + 1


def test_five_minutes_is_a_whole_file() -> None:
    """Runnable as copied: the README's example is the example file, every line of it
    (GitHub shows no snippets: the README's one example is a copy, checked here)."""
    readme = PAGES["README.md"]
    section = readme[readme.index("## Five minutes") :]
    marker, _, body = next(b for b in BLOCKS if b[2] in section)
    assert marker == "excerpt: examples/quickstart.py"
    assert body == (ROOT / "examples" / "quickstart.py").read_text().rstrip("\n")


def test_the_first_steps_page_includes_the_whole_example() -> None:
    """The site includes the example (a snippet), so it cannot drift from it."""
    page = (ROOT / "docs" / "tutorial" / "first-steps.md").read_text()
    assert '```python\n--8<-- "examples/fastapi_lifespan.py"\n```' in page


def test_the_readme_is_short() -> None:
    assert len(PAGES["README.md"].splitlines()) <= 200
