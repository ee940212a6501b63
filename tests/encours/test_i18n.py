from __future__ import annotations

from babel.messages.pofile import read_po

from kernel import i18n


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


def test_every_message_in_the_code_is_in_the_french_catalog(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Messages are added to the catalog by hand at times: none may be forgotten (it would show in English)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    pot = tmp_path / "messages.pot"
    pybabel = Path(sys.executable).with_name("pybabel")
    subprocess.run(
        [str(pybabel), "-q", "extract", "-F", "babel.cfg", "-k", "_t:2", "-k", "N_", "-k", "gettext:1,1t", "-k",
         "gettext:2,2t", "--no-location", "-o", str(pot),
         "kernel", "encours", "portal", "links", "ledger", "mail", "dunning", "admin", "payments", "reconciliation"],
        cwd=root, check=True, capture_output=True,
    )
    with open(pot, "rb") as handle:
        extracted = {m.id for m in read_po(handle) if m.id}
    with open(i18n.LOCALE_DIR / "fr" / "LC_MESSAGES" / "messages.po", "rb") as handle:
        catalog = {m.id: m.string for m in read_po(handle) if m.id}
    missing = sorted(str(m) for m in extracted if not catalog.get(m))
    assert missing == [], f"{len(missing)} message(s) without a French translation: {missing[:20]}"
