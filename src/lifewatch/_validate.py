"""Argument checks: each error says what was given and what is accepted."""

from __future__ import annotations

import math
import re
from typing import Literal, overload

from ._types import RESERVED


def validate_name(name: object, what: str = "phase name") -> str:
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"{what} must be a non-empty string; got {name!r}")
    return name


def validate_bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be True or False; got {value!r}")
    return value


@overload
def validate_seconds(
    value: object, what: str = ..., *, optional: Literal[False], zero_ok: bool = ...
) -> float: ...
@overload
def validate_seconds(
    value: object, what: str = ..., *, optional: bool = ..., zero_ok: bool = ...
) -> float | None: ...
def validate_seconds(
    value: object, what: str = "timeout", *, optional: bool = True, zero_ok: bool = False
) -> float | None:
    """A finite number of seconds, positive (or >= 0 when ``zero_ok``; None when ``optional``)."""
    if value is None and optional:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero_ok)
    ):
        accepted = "a number of seconds >= 0" if zero_ok else "a positive number of seconds"
        raise ValueError(
            f"{what} must be {accepted}{' or None' if optional else ''}; got {value!r}"
        )
    return float(value)


def validate_path(path: object, what: str, example: str) -> str | None:
    """An endpoint path: ``None`` (not served) or an absolute path."""
    if path is not None and (
        not isinstance(path, str)
        or not path.startswith("/")
        or path == "/"
        or path.endswith("/")
        or any(c.isspace() or c in "?#" for c in path)
    ):
        raise ValueError(
            f"{what} must be an absolute path such as {example!r} (starting with '/', not "
            f"ending with '/', no spaces, '?' or '#'), or None to not serve it; got {path!r}"
        )
    return path


_NAMESPACE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def validate_namespace(namespace: object) -> str:
    """The metric name prefix, checked at construction, not at the first scrape."""
    if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
        raise ValueError(
            f"namespace={namespace!r} is not a valid Prometheus metric name prefix; "
            "expected letters, digits, '_' or ':' not starting with a digit, e.g. 'lifespan'"
        )
    return namespace


def validate_address(address: object, what: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9000`` for IPv6) to listen on; port 0 picks a free one."""
    host, port_text = "", ""
    if isinstance(address, str):
        if address.startswith("["):
            inner, bracket, rest = address[1:].partition("]")
            if bracket and rest.startswith(":") and ":" in inner:
                host, port_text = inner, rest[1:]
        elif address.count(":") == 1:
            host, _, port_text = address.partition(":")
    if (
        not host
        or any(c.isspace() or c in "/?#@" for c in host)
        or not port_text.isdigit()
        or not 0 <= int(port_text) <= 65535
    ):
        raise ValueError(
            f"{what} must be 'host:port' with a port from 0 to 65535, e.g. '0.0.0.0:9000' "
            f"or '[::]:9000'; got {address!r}"
        )
    return host, int(port_text)


_CHECK_NAME = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}"  # compiled with the first check


def validate_check_name(name: object) -> str:
    """A check name is a path segment and a label value: keep it plain."""
    if not isinstance(name, str) or not re.fullmatch(_CHECK_NAME, name):
        raise ValueError(
            f"check name must be 1-100 characters of letters, digits, '_', '.', ':' or '-', "
            f"starting with a letter or digit (it becomes the path /readyz/<name>); got {name!r}"
        )
    if name == RESERVED:
        raise ValueError(
            f"check name {name!r} is reserved for the lifecycle entry of /readyz; pick another"
        )
    return name
