"""What ``scrub`` takes out of the text lifewatch writes, and what it leaves: a table."""

from __future__ import annotations

import pytest

from lifewatch._scrub import scrub

M = "******"

SCRUBBED = [
    # URL credentials
    ("postgres://admin:S3cr3t@db:5432/orders", "postgres://***@db:5432/orders"),
    ("redis://:pw@cache:6379/0", "redis://***@cache:6379/0"),
    # k=v, any case, digits after the name, spaces around =
    ("password=hunter2", f"password={M}"),
    ("PASSWORD=hunter2", f"PASSWORD={M}"),
    ("db_password = hunter2 user=app", f"db_password = {M} user=app"),
    ("password2=hunter2", f"password2={M}"),
    ("passwd=x pwd=y", f"passwd={M} pwd={M}"),
    ("mysql_pwd=x", f"mysql_pwd={M}"),
    ("secret=x", f"secret={M}"),
    ("client_secret=x", f"client_secret={M}"),
    ("secrets=x", f"secrets={M}"),
    ("token=x", f"token={M}"),
    ("auth_token=x", f"auth_token={M}"),
    ("refresh_token=x", f"refresh_token={M}"),
    ("api_key=abc api-key=abc apikey=abc", f"api_key={M} api-key={M} apikey={M}"),
    ("apiKey=abc", f"apiKey={M}"),
    ("access_key=x aws_secret_access_key=y", f"access_key={M} aws_secret_access_key={M}"),
    ("secret_key=x", f"secret_key={M}"),
    ("private_key=x", f"private_key={M}"),
    ("auth=x", f"auth={M}"),
    ("credential=x credentials=y", f"credential={M} credentials={M}"),
    (
        "session=x session_id=y sessionid=z session-key=w",
        f"session={M} session_id={M} sessionid={M} session-key={M}",
    ),
    ("--password=hunter2", f"--password={M}"),
    # a value that only starts like a word that is none
    ("password=strong1 token=None2 auth=trueish", f"password={M} token={M} auth={M}"),
    # the value ends at whitespace, a quote, , ; &
    ("password=hunter2, user=app", f"password={M}, user=app"),
    ("password=hunter2;host=db", f"password={M};host=db"),
    ("GET /x?access_token=abc&page=2", f"GET /x?access_token={M}&page=2"),
    ("password=p@ss:w0rd!", f"password={M}"),
    # k: v
    ("token: xyz", f"token: {M}"),
    ("token:xyz", f"token:{M}"),
    ("Authorization: Bearer eyJhbGciOi.x.y", f"Authorization: Bearer {M}"),
    ("authorization: basic dXNlcjpwYXNz", f"authorization: basic {M}"),
    ("password: basic x", f"password: {M}"),  # no scheme there: both words go
    ("session: closed", f"session: {M}"),  # prose pays for never missing "token: xyz"
    # quoted values, whole: JSON, a dict's repr, keyword arguments
    ('{"password": "hunter2", "user": "app"}', f'{{"password": "{M}", "user": "app"}}'),
    ('{"password": "hun ter\\"2"}', f'{{"password": "{M}"}}'),
    ("{'api key': 'abc def'}", f"{{'api key': '{M}'}}"),
    ('{"token": 12345}', f'{{"token": {M}'),
    ("connect(password='a b')", f"connect(password='{M}')"),
    ('"Api_Key":"abc"', f'"Api_Key":"{M}"'),
    # several in one message, and in a traceback's source line
    (
        "connect failed: password=hunter2 api_key=abc token: xyz",
        f"connect failed: password={M} api_key={M} token: {M}",
    ),
    (
        '    raise RuntimeError("password=hunter2 token: xyz")',
        f'    raise RuntimeError("password={M} token: {M}")',
    ),
    # a PEM private key, whole
    (
        "key: -----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAK\n-----END RSA PRIVATE KEY----- end",
        f"key: -----BEGIN RSA PRIVATE KEY-----{M}-----END RSA PRIVATE KEY----- end",
    ),
]

KEPT = [
    "",
    "lifespan.phase.end phase=database duration_s=0.31 outcome=ok",
    "lifewatch: startup phase 'database' failed (error)",
    "RuntimeError: migration failed",
    # the name must END with a secret's word, as in Spring Boot
    "token_count=3",
    "max_tokens=100",
    "tokens: 3",
    "token_type=bearer",
    "tokenizer=bpe",
    "passwordless=true",
    "password_file=/run/secrets/db",
    "auth_method=scram",
    "authenticated=true",
    "author=ada",
    "api_key_id=42",
    "cwd=/srv/app",
    "keyword=x",
    "cache_key=users:42",
    # words that are no value: annotations and defaults in a traceback's source lines
    "async def connect(password: str, token: Optional[str] = None) -> None:",
    "def login(api_key: SecretStr, auth=None, session: Any = None):",
    "password=None token=null auth=true session: false",
    # no separator: a word, not a key
    "invalid token",
    "password authentication failed for user app",
    "postgres://db:5432/orders",
    "http://example.com/path?page=2",
]


@pytest.mark.parametrize(("text", "expected"), SCRUBBED)
def test_secrets_are_replaced_and_their_keys_kept(text: str, expected: str) -> None:
    assert scrub(text) == expected


@pytest.mark.parametrize("text", KEPT)
def test_text_naming_no_secret_is_left_as_is(text: str) -> None:
    assert scrub(text) == text


def test_a_line_break_ends_the_search_for_a_value() -> None:
    """``token:`` at the end of a line does not take the next line's first word."""
    assert scrub("token:\nnext line") == "token:\nnext line"


def test_scrubbing_twice_changes_nothing_more() -> None:
    for text, expected in SCRUBBED:
        assert scrub(expected) == expected, text
