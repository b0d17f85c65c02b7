"""Secrets out of the text lifewatch writes: ``scrub(text)``.

Exception messages, tracebacks and stacks often carry a credential, so every
string lifewatch writes passes through here (never the app's own exception).
After Sentry's scrubber and Spring Boot's key sanitizing, case-insensitive:

- URL credentials: ``postgres://admin:S3cr3t@db`` becomes ``postgres://***@db``.
- The value (``******``) of a key whose name *ends* with password, passwd, pwd, secret(s),
  token, api key, access key, private key, secret key, auth, authorization,
  credential(s), session, session id or session key (words joined by ``_``,
  ``-``, ``.``, a space or nothing; digits may follow), in ``k=v``, ``k: v``,
  JSON and dict-repr forms; ``Authorization: Bearer x`` keeps its scheme. The
  end decides: ``max_tokens=100`` and ``password_file=/run/secrets/db`` stay.
- A PEM private key block, whole.

Prose is over-scrubbed (``session: closed``) rather than miss ``token: xyz``;
words that are no value stay (``password: str``), so source lines still read.
"""

from __future__ import annotations

import re

MASK = "******"

# Patterns, not compiled objects: re's cache compiles each at first use, not at import.
# userinfo of a URL (RFC 3986 §3.2.1): "postgres://admin:S3cr3t@db", "redis://:pw@cache".
_URL = r"(?i)\b([a-z][a-z0-9+.-]{0,30}://)[^\s/@?#]{1,256}@"

_J = r"[\s_.-]?"  # what may join the words of a key: api_key, api-key, apikey, "api key"
_NAMES = (
    rf"pass(?:word|wd)s?|pwd|secrets?|token|(?:api|access|private|secret){_J}key"
    rf"|auth(?:orization)?|credentials?|session(?:{_J}(?:id|key))?"
)
# Words that stand where a value would and are none: ``password: str``,
# ``token: Optional[str] = None`` in a traceback's source lines.
_NO_VALUE = r"(?:none|null|true|false|str|bytes|int|bool|any|optional|secretstr)"
_KEY_VALUE = rf"""(?ix)
    (?P<key>(?:{_NAMES})\d*)        # the end of the key's name
    (?P<sep>["']?[ \t]*[=:][ \t]*)  # = or :, after a closing quote (JSON, a dict's repr)
    (?P<scheme>(?:bearer|basic|digest|token|negotiate)[ \t]+)?  # Authorization's scheme
    (?!{_NO_VALUE}\b)               # a type annotation or a default in a traceback's source
    (?P<value>
        "(?:[^"\\\n]|\\.)*"         # a quoted value, whole
      | '(?:[^'\\\n]|\\.)*'
      | [^\s"',;&]+                 # else up to whitespace, a quote or , ; &
    )
    """
_PEM = r"(?s)-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----.*?(?:-----END \1-----|\Z)"


def _mask(match: re.Match[str]) -> str:
    value = match["value"]
    quote = value[0] if value[0] in "\"'" else ""
    scheme = match["scheme"] or ""
    if scheme and not match["key"].lower().startswith("auth"):
        scheme = ""  # "password: basic x": no scheme there, both words go
        quote = ""
    return f"{match['key']}{match['sep']}{scheme}{quote}{MASK}{quote}"


def scrub(text: str) -> str:
    """``text`` without the secrets the module docstring lists."""
    if "://" in text:
        text = re.sub(_URL, r"\1***@", text)
    if "PRIVATE KEY-----" in text:
        text = re.sub(_PEM, rf"-----BEGIN \1-----{MASK}-----END \1-----", text)
    if "=" in text or ":" in text:
        text = re.sub(_KEY_VALUE, _mask, text)
    return text
