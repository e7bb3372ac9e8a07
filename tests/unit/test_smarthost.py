import pytest

from hafen.errors import InvalidInput
from hafen.mail.smarthost import Smarthost, parse


def test_an_empty_url_sends_nothing() -> None:
    assert parse("") is None
    assert parse("  ") is None


@pytest.mark.parametrize(("url", "expected"), [
    ("smtp://mail.example.com", Smarthost("mail.example.com", 25, tls="may")),
    ("smtp://u%40x:p%2Fw@mail.example.com:587", Smarthost("mail.example.com", 587, "u@x", "p/w", tls="verify")),
    ("smtps://u:p@mail.example.com", Smarthost("mail.example.com", 465, "u", "p", implicit_tls=True, tls="verify")),
    ("smtp://10.0.0.5:2525?tls=none", Smarthost("10.0.0.5", 2525, tls="none")),
    ("SMTP://u:p@h:587?tls=encrypt", Smarthost("h", 587, "u", "p", tls="encrypt")),
])
def test_urls_name_host_port_user_and_tls(url: str, expected: Smarthost) -> None:
    assert parse(url) == expected


@pytest.mark.parametrize(("url", "words"), [
    ("http://h", "must start with smtp"),
    ("h:25", "must start with smtp"),
    ("smtp://", "names no host"),
    ("smtp://h:99999", "not a valid URL"),
    ("smtp://h?tls=maybe", "tls must be one of"),
    ("smtps://h?tls=none", "always encrypts"),
    ("smtp://u:secret@h?tls=none", "never sent without TLS"),
])
def test_bad_urls_say_why_without_the_password(url: str, words: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse(url)
    assert words in str(raised.value)
    assert "secret" not in str(raised.value)


def test_the_display_hides_the_password() -> None:
    host = parse("smtp://u:secret@h:587")
    assert host is not None and host.display == "smtp://u:***@h:587?tls=verify"
