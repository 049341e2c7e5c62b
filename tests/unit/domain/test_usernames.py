"""Username normalisation (the uniqueness key) and validation of new usernames."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reflexblue.domain.usernames import MAX_USERNAME_LENGTH, normalise_username, validate_username


@pytest.mark.parametrize("variant", ["Shop-API", "shop-api", "SHOP-API", "  shop-api  ", "\tShop-Api\n"])
def test_normalise_folds_case_and_trims(variant: str) -> None:
    assert normalise_username(variant) == "shop-api"


def test_normalise_maps_full_width_letters() -> None:
    assert normalise_username("ｓｈｏｐ-ａｐｉ") == "shop-api"
    assert normalise_username("ＳＨＯＰ－ＡＰＩ") == "shop-api"


def test_normalise_trims_ideographic_space() -> None:
    # U+3000 becomes an ordinary space under NFKC and is then trimmed.
    assert normalise_username("\u3000shop-api\u3000") == "shop-api"


def test_normalise_sharp_s_equals_double_s() -> None:
    # Unicode case folding maps "ß" to "ss", so "Straße" and "STRASSE" are one user.
    assert normalise_username("Straße") == normalise_username("STRASSE")
    assert normalise_username("Straße") == "strasse"


def test_normalise_expands_compatibility_ligature() -> None:
    assert normalise_username("ﬁnance") == "finance"


def test_normalise_composes_combining_accents() -> None:
    assert normalise_username("jose\u0301") == normalise_username("josé")


def test_normalise_keeps_cyrillic_confusable_distinct() -> None:
    latin = normalise_username("shop-api")
    cyrillic = normalise_username("shop-\u0430pi")  # U+0430 CYRILLIC SMALL LETTER A

    assert cyrillic != latin


def test_normalise_keeps_greek_omicron_distinct() -> None:
    assert normalise_username("r\u03bfot") != normalise_username("root")  # U+03BF GREEK SMALL LETTER OMICRON


def test_normalise_is_idempotent() -> None:
    for name in ["Straße", "ｓｈｏｐ", "ﬁnance", "Ǆ", "İstanbul"]:
        once = normalise_username(name)
        assert normalise_username(once) == once


def test_validate_returns_trimmed_display() -> None:
    assert validate_username("  Shop-API  ") == "Shop-API"


def test_validate_keeps_case_for_display() -> None:
    assert validate_username("ｓｈｏｐ-API") == "shop-API"


@pytest.mark.parametrize("name", ["", "   ", "\t\n", "\u3000"])
def test_validate_rejects_empty(name: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        validate_username(name)


@pytest.mark.parametrize(
    "name",
    ["shop\x00api", "shop\x07api", "shop\tapi", "shop\x7fapi", "shop\u200bapi", "shop\u202eapi", "shop\ufeffapi"],
)
def test_validate_rejects_control_and_format_chars(name: str) -> None:
    with pytest.raises(ValueError, match="control, format"):
        validate_username(name)


def test_validate_accepts_max_length() -> None:
    name = "a" * MAX_USERNAME_LENGTH

    assert MAX_USERNAME_LENGTH == 150
    assert validate_username(name) == name


def test_validate_rejects_over_max_length() -> None:
    with pytest.raises(ValueError, match="150"):
        validate_username("a" * 151)


def test_validate_length_ignores_surrounding_spaces() -> None:
    name = "a" * MAX_USERNAME_LENGTH

    assert validate_username(f"  {name}  ") == name


def test_validate_accepts_non_ascii_letters() -> None:
    assert validate_username("Jörg Müller") == "Jörg Müller"


@settings(max_examples=500, database=None, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_normalise_idempotent_for_any_text(name: str) -> None:
    once = normalise_username(name)

    assert normalise_username(once) == once


@settings(max_examples=500, database=None, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_display_form_has_same_key(name: str) -> None:
    # Users are stored under the key of their display form and looked up by the key of the input.
    try:
        display = validate_username(name)
    except ValueError:
        return

    assert normalise_username(display) == normalise_username(name)
