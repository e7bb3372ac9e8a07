import pytest

from hafen.errors import InvalidInput
from hafen.instances import validation


@pytest.mark.parametrize("value", ["abc", "my-event-2026", "a" * 32, "a1b", "x-9"])
def test_valid_names(value):
    assert validation.name(value) == value


@pytest.mark.parametrize(
    "value",
    ["ab", "a" * 33, "1abc", "Abc", "abc-", "a--b", "a_b", "", "-abc", "ab c", "abc.def", "äbc"],
)
def test_invalid_names(value):
    with pytest.raises(InvalidInput, match="invalid name"):
        validation.name(value)


def test_name_with_trailing_newline_is_invalid():
    with pytest.raises(InvalidInput):
        validation.name("abc\n")


def test_domain_label_with_trailing_newline_is_invalid():
    with pytest.raises(InvalidInput):
        validation.domain("abc\n.example.org")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("event.example.org", "event.example.org"),
        ("abc.localhost", "abc.localhost"),
        ("Event.Example.ORG", "event.example.org"),
        ("event.example.org.", "event.example.org"),
        ("  my-event.example.org ", "my-event.example.org"),
        ("a.b", "a.b"),
        ("x" * 63 + ".org", "x" * 63 + ".org"),
    ],
)
def test_valid_domains_are_normalised(value, expected):
    assert validation.domain(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "localhost",
        "",
        "a..b",
        "-a.example.org",
        "a-.example.org",
        "a_b.example.org",
        "ex ample.org",
        "http://example.org",
        "example.org/path",
        "x" * 64 + ".org",
        ".".join(["abcdefghi"] * 26),  # 259 characters
        ".".join(["abcdefghi"] * 25),  # 249 characters: its alias under the route suffix is too long
        "event.123",  # the edge routes no host whose last label is numeric (it could be an IP address)
        "127.0.0.1",
    ],
)
def test_invalid_domains(value):
    with pytest.raises(InvalidInput, match="invalid domain"):
        validation.domain(value)


def test_app_version_defaults_to_the_apps_default_version():
    app, version = validation.app_version("openslides", None)
    assert app.name == "openslides"
    assert version == app.default_version == "3.3"


def test_app_version_accepts_a_listed_version():
    app, version = validation.app_version("demo", "1.0")
    assert (app.name, version) == ("demo", "1.0")


def test_unknown_app_names_it_and_the_known_apps():
    with pytest.raises(InvalidInput) as info:
        validation.app_version("nope", None)
    message = str(info.value)
    assert "unknown app 'nope'" in message
    assert "demo" in message and "openslides" in message


def test_unknown_version_names_it_and_the_known_versions():
    with pytest.raises(InvalidInput) as info:
        validation.app_version("openslides", "9.9")
    message = str(info.value)
    assert "unknown version '9.9' of openslides" in message
    assert "3.3" in message


@pytest.mark.parametrize("value", ["small", "medium", "large"])
def test_valid_sizes(value):
    assert validation.size(value) == value


@pytest.mark.parametrize("value", ["huge", "", "Small", " small"])
def test_invalid_sizes(value):
    with pytest.raises(InvalidInput, match="unknown size") as info:
        validation.size(value)
    assert "small, medium, large" in str(info.value)


@pytest.mark.parametrize("value", [0, 1, 3, validation.MAX_REPLICAS])
def test_replicas_within_bounds(value):
    assert validation.replicas(value) == value


@pytest.mark.parametrize("value", [-1, validation.MAX_REPLICAS + 1, 1000])
def test_replicas_out_of_bounds(value):
    with pytest.raises(InvalidInput, match=f"between 0 and {validation.MAX_REPLICAS}, not {value}"):
        validation.replicas(value)
