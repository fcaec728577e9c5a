"""Response headers from applications: what ``header_pairs`` accepts and
refuses (a name or value that would break the response framing), and that
the cache of names already checked never lets a bad one through."""

from __future__ import annotations

import pytest

from wsnest.http._response import header_pairs


def test_mappings_and_pairs_are_normalised() -> None:
    assert header_pairs({"Content-Type": "text/plain", "X-N": 5}) == [("Content-Type", "text/plain"), ("X-N", "5")]
    assert header_pairs([("A", "1"), ("A", "2")]) == [("A", "1"), ("A", "2")]
    assert header_pairs(None) == []
    assert header_pairs({"X-Latin": "café"}) == [("X-Latin", "café")]


@pytest.mark.parametrize("name", ["", "Bad Name", "Colon:", "Tab\t", "CR\r", "LF\n", "Nul\0", "Ünicode"])
def test_bad_names_are_refused_every_time(name: str) -> None:
    for _ in range(2):  # the second time too: a refused name is never cached as good
        with pytest.raises(ValueError, match="invalid header name"):
            header_pairs({name: "x"})


@pytest.mark.parametrize("value", ["a\rb", "a\nb", "a\0b", "\r\nInjected: yes"])
def test_values_that_break_the_framing_are_refused_after_a_good_name(value: str) -> None:
    header_pairs({"X-Good": "fine"})  # the name is now known good: the value is still checked
    with pytest.raises(ValueError, match="line break"):
        header_pairs({"X-Good": value})


def test_values_must_be_latin1() -> None:
    with pytest.raises(ValueError, match="not Latin-1"):
        header_pairs({"X-Emoji": "\N{SNOWMAN}"})


def test_items_must_be_pairs() -> None:
    with pytest.raises(TypeError, match="pairs"):
        header_pairs(["not a pair"])  # type: ignore[list-item]


def test_the_cache_of_good_names_is_bounded() -> None:
    from wsnest.http import _response

    for i in range(3000):
        header_pairs({f"X-Made-Up-{i}": "v"})
    assert len(_response._CHECKED_NAMES) <= 1024


@pytest.mark.parametrize("value", ["a\rb", "\r\nInjected: yes", "\N{SNOWMAN}"])
def test_a_refused_value_is_refused_every_time(value: str) -> None:
    for _ in range(2):  # a refused value is never cached as good
        with pytest.raises(ValueError, match=r"line break|not Latin-1"):
            header_pairs({"X-Good": value})


def test_a_good_value_stays_good_under_any_name_but_names_are_still_checked() -> None:
    assert header_pairs({"X-One": "shared"}) == [("X-One", "shared")]
    assert header_pairs({"X-Two": "shared"}) == [("X-Two", "shared")]
    with pytest.raises(ValueError, match="invalid header name"):
        header_pairs({"Bad Name": "shared"})


def test_the_cache_of_good_values_is_bounded() -> None:
    from wsnest.http import _response

    for i in range(3000):
        header_pairs({"X-Id": f"request-{i}"})
    assert len(_response._CHECKED_VALUES) <= 1024
    long_value = "v" * 10_000
    assert header_pairs({"X-Long": long_value}) == [("X-Long", long_value)]
    assert long_value not in _response._CHECKED_VALUES


@pytest.mark.parametrize("name", ["Content-Type", "content-type", "CONTENT-TYPE"])
def test_content_type_is_found_in_any_case(name: str) -> None:
    from wsnest.http._response import header_list

    assert header_list({name: "text/html", "X-Other": "1"}) == ([(name, "text/html"), ("X-Other", "1")], True)
    assert header_list({"X-Other": "1"})[1] is False
    assert header_list([("X-Content-Type", "x")])[1] is False
