"""_target: the Lifewatch of ``module`` or ``module:attr``, or one clear line why not."""

from __future__ import annotations

import importlib
import itertools
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from lifewatch import Lifewatch
from lifewatch._target import TargetError, find_watch
from tests.support.servers import env

_names = itertools.count()

HEADER = """
from starlette.applications import Starlette
from lifewatch import Lifewatch, LifewatchMiddleware
"""


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """Writes a module with the given body and returns its (fresh) name."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(body: str) -> str:
        name = f"lw_target_{next(_names)}"
        (tmp_path / f"{name}.py").write_text(HEADER + textwrap.dedent(body))
        return name

    return write


def test_the_watch_itself_an_instrumented_app_or_a_middleware(module: Callable[[str], str]) -> None:
    name = module(
        """
        watch = Lifewatch(service="a")
        app = watch.instrument(Starlette())
        other = Lifewatch(service="b")
        raw = LifewatchMiddleware(Starlette(), watch=other)

        class Outer:  # any ASGI wrapper that keeps the app it wraps as .app
            def __init__(self, app):
                self.app = app

        wrapped = Outer(raw)
        """
    )
    mod = importlib.import_module(name)
    assert find_watch(f"{name}:watch") is mod.watch
    assert find_watch(f"{name}:app") is mod.watch
    assert find_watch(f"{name}:raw") is mod.other
    assert find_watch(f"{name}:wrapped") is mod.other
    assert isinstance(find_watch(f"{name}:app"), Lifewatch)


def test_a_module_alone_when_it_holds_one_watch(module: Callable[[str], str]) -> None:
    name = module(
        """
        watch = Lifewatch(service="a")
        app = watch.instrument(Starlette())  # the same watch: still one
        """
    )
    assert find_watch(name).options.service == "a"


@pytest.mark.parametrize(
    ("body", "target", "message"),
    [
        ("", "lw_no_such_module_here:app", "no module named 'lw_no_such_module_here'"),
        (
            "import lw_missing_dependency\n",
            "{m}:app",
            "importing '{m}' failed: ModuleNotFoundError",
        ),
        (
            "raise RuntimeError('no\\nconfig')\n",
            "{m}",
            "importing '{m}' failed: RuntimeError: no config",
        ),
        ("watch = Lifewatch()\n", "{m}:app", "module '{m}' has no attribute 'app'"),
        ("app = Starlette()\n", "{m}:app", "no Lifewatch found in '{m}:app'"),
        ("app = Starlette()\n", "{m}", "no Lifewatch found in '{m}'"),
        (
            "a = Lifewatch(service='a')\nb = Lifewatch(service='b')\n",
            "{m}",
            "2 Lifewatch objects found in '{m}' (services: a, b); name one",
        ),
        ("", ":app", "expected module or module:attribute"),
        ("", "{m}:a:b", "expected module or module:attribute"),
    ],
)
def test_what_does_not_name_one_watch_is_one_line(
    module: Callable[[str], str], body: str, target: str, message: str
) -> None:
    name = module(body)
    with pytest.raises(TargetError) as caught:
        find_watch(target.format(m=name))
    text = str(caught.value)
    assert message.format(m=name) in text
    assert "\n" not in text


def test_the_cli_says_it_in_one_line_and_exits_2(tmp_path: Path) -> None:
    (tmp_path / "twowatches.py").write_text(
        "from lifewatch import Lifewatch\na = Lifewatch()\nb = Lifewatch()\n"
    )
    for target, wanted in (
        ("nosuchmodule:app", "no module named 'nosuchmodule'"),
        ("twowatches", "2 Lifewatch objects found"),
        ("twowatches:c", "has no attribute 'c'"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "lifewatch", "grafana", "--app", target, "--rules"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,  # found from the current directory, as uvicorn finds apps
            env=env(),
        )
        assert done.returncode == 2, done
        assert done.stdout == ""
        assert done.stderr.count("\n") == 1 and wanted in done.stderr, done.stderr
        assert done.stderr.startswith("lifewatch grafana: ")
