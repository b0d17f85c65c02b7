"""Finding the one ``Lifewatch`` behind ``module:app``; one line and exit 2 otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifewatch.__main__ import main
from lifewatch._find import NotFound, find_watch

APP = """
from starlette.applications import Starlette
from lifewatch import Lifewatch
{body}
"""


def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> str:
    (tmp_path / f"{name}.py").write_text(APP.format(body=body))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_finds_the_one_lifewatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = module(
        tmp_path,
        monkeypatch,
        "one_watch",
        "watch = Lifewatch(service='a', registry=None, namespace='one')\n"
        "app = watch.instrument(Starlette())",
    )
    found = find_watch(f"{name}:app")
    assert found.watch.service == "a" and found.module == name
    # Found behind the app alone, without a global.
    name = module(
        tmp_path,
        monkeypatch,
        "hidden_watch",
        "from lifewatch import LifewatchMiddleware\n"
        "app = LifewatchMiddleware(Starlette(), watch=Lifewatch(service='h', namespace='hid'))",
    )
    assert find_watch(name).watch.service == "h"  # ':app' is the default


@pytest.mark.parametrize(
    ("body", "target", "says"),
    [
        ("app = Starlette()", "none_watch:app", "no Lifewatch found in 'none_watch'"),
        (
            "a = Lifewatch(namespace='two_a')\nb = Lifewatch(namespace='two_b')\napp = Starlette()",
            "two_watch:app",
            "2 Lifewatch objects found for 'two_watch:app'",
        ),
        ("app = Starlette()", "no_such_module:app", "no module named 'no_such_module'"),
        (
            "app = Starlette()",
            "no_attr:application",
            "module 'no_attr' has no attribute 'application'",
        ),
        ("raise RuntimeError('boom')", "broken_mod:app", "importing 'broken_mod' failed"),
    ],
)
def test_one_line_and_exit_2_when_there_is_not_one(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    body: str,
    target: str,
    says: str,
) -> None:
    if not target.startswith("no_such"):
        module(tmp_path, monkeypatch, target.split(":")[0], body)
    with pytest.raises(NotFound, match=says):
        find_watch(target)
    assert main(["k8s", target]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"lifewatch k8s: {says}"), err
