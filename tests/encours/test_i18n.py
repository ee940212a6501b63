from __future__ import annotations

from babel.messages.pofile import read_po

from encours import i18n


def test_every_message_has_a_french_translation() -> None:
    with open(i18n.LOCALE_DIR / "fr" / "LC_MESSAGES" / "messages.po", "rb") as handle:
        catalog = read_po(handle)
    missing = [m.id for m in catalog if m.id and (not m.string or (isinstance(m.string, tuple) and not all(m.string)))]
    assert missing == []
    # pybabel compile skips fuzzy entries: they would silently stay in English.
    assert [m.id for m in catalog if m.id and m.fuzzy] == []


def test_compiled_catalog_matches_the_po_file() -> None:
    assert i18n.translations("fr").gettext("Statement of account") == "Relevé de compte"
    assert i18n.translations("en").gettext("Statement of account") == "Statement of account"


def test_negotiation_prefers_the_visitors_best_language() -> None:
    assert i18n.negotiate("en-GB,en;q=0.9,fr;q=0.8") == "en"
    assert i18n.negotiate("de-DE,fr;q=0.5,en;q=0.4") == "fr"
    assert i18n.negotiate("de") == i18n.DEFAULT_LANGUAGE
    assert i18n.negotiate(None) == i18n.DEFAULT_LANGUAGE
