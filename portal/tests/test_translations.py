"""The German translation: a complete, placeholder-safe catalogue, compiled, and used by the portal's pages.

The .po file is parsed here with a few lines of Python (polib is not a dependency); the compiled .mo is read
with the standard library's gettext so a catalogue that was edited but not compiled fails too.
"""

from __future__ import annotations

import gettext as stdlib_gettext
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from babel.dates import format_date
from django.conf import settings
from django.urls import reverse
from django.utils import translation
from django.utils.dateparse import parse_datetime

from billing.services.quotes import quote_price
from billing.tests.factories import MID_JANUARY, live_subscription_setup, subscription_setup
from portal.templatetags.portal import line_text

LOCALE_DIR = Path(settings.BASE_DIR) / "locale" / "de" / "LC_MESSAGES"
PO_FILE = LOCALE_DIR / "django.po"
MO_FILE = LOCALE_DIR / "django.mo"

# %(name)s / %(name)d and a literal %% (python-format); every msgstr must keep exactly the msgid's set.
PLACEHOLDER = re.compile(r"%\(\w+\)[sdif]|%%")


@dataclass
class Entry:
    msgid: str = ""
    msgid_plural: str | None = None
    msgstr: dict[int, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    line: int = 0


def _unquote(text: str) -> str:
    body = text.strip()[1:-1]
    return re.sub(r'\\(["\\nt])', lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


def parse_po(path: Path) -> list[Entry]:
    """Entries in file order (the header first); obsolete (#~) entries are skipped."""
    entries: list[Entry] = []
    entry: Entry | None = None
    target: tuple[str, int] | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line:
            entry, target = None, None
            continue
        if line.startswith("#~"):
            continue
        if entry is None:
            entry = Entry(line=number)
            entries.append(entry)
        if line.startswith("#,"):
            entry.flags |= {flag.strip() for flag in line[2:].split(",")}
        elif line.startswith("#"):
            continue
        elif line.startswith('"'):
            assert target is not None, f"{path}:{number}: continuation line outside a message"
            kind, index = target
            if kind == "msgid":
                entry.msgid += _unquote(line)
            elif kind == "msgid_plural":
                entry.msgid_plural = (entry.msgid_plural or "") + _unquote(line)
            else:
                entry.msgstr[index] += _unquote(line)
        else:
            keyword, _space, value = line.partition(" ")
            match = re.fullmatch(r"msgstr\[(\d+)\]", keyword)
            if keyword == "msgid":
                entry.msgid, target = _unquote(value), ("msgid", 0)
            elif keyword == "msgid_plural":
                entry.msgid_plural, target = _unquote(value), ("msgid_plural", 0)
            elif keyword == "msgstr":
                entry.msgstr[0], target = _unquote(value), ("msgstr", 0)
            elif match:
                entry.msgstr[int(match.group(1))], target = _unquote(value), ("msgstr", int(match.group(1)))
            else:
                raise AssertionError(f"{path}:{number}: unexpected line {raw!r}")
    return entries


def placeholders(text: str) -> list[str]:
    return sorted(PLACEHOLDER.findall(text))


@pytest.fixture(scope="module")
def catalogue() -> list[Entry]:
    entries = parse_po(PO_FILE)
    assert entries and entries[0].msgid == "", "the header comes first"
    return entries


@pytest.fixture(scope="module")
def messages(catalogue) -> list[Entry]:
    return catalogue[1:]


# --- the catalogue -----------------------------------------------------------------------------------------


def test_header_declares_german_with_two_plural_forms(catalogue):
    header = dict(line.split(": ", 1) for line in catalogue[0].msgstr[0].splitlines() if ": " in line)
    assert header["Language"] == "de"
    assert header["Plural-Forms"] == "nplurals=2; plural=(n != 1);"
    assert header["Content-Type"] == "text/plain; charset=UTF-8"
    assert "fuzzy" not in catalogue[0].flags


def test_catalogue_has_the_portal_messages(messages):
    assert len(messages) >= 200
    msgids = {entry.msgid for entry in messages}
    assert {"Sign in", "Overview", "Plans", "Billing history", "due today"} <= msgids


def test_every_message_is_translated_and_none_is_fuzzy(messages):
    untranslated = [entry.msgid for entry in messages if not entry.msgstr or not all(entry.msgstr.values())]
    fuzzy = [entry.msgid for entry in messages if "fuzzy" in entry.flags]
    assert untranslated == []
    assert fuzzy == []


def test_plural_messages_have_both_german_forms(messages):
    plurals = [entry for entry in messages if entry.msgid_plural is not None]
    assert plurals, "the day/second counts are plural messages"
    for entry in plurals:
        assert sorted(entry.msgstr) == [0, 1], entry.msgid
        assert entry.msgstr[0] != entry.msgstr[1], entry.msgid
    for entry in messages:
        if entry.msgid_plural is None:
            assert sorted(entry.msgstr) == [0], entry.msgid


def test_every_translation_keeps_the_placeholders_of_its_msgid(messages):
    problems = []
    for entry in messages:
        expected = placeholders(entry.msgid)
        # German has English's two forms (plural=(n != 1)): form 0 keeps the msgid's placeholders, form 1 the
        # msgid_plural's (a singular may say "tomorrow" where the plural says "in %(days)s days").
        forms = {0: expected, 1: placeholders(entry.msgid_plural or entry.msgid)}
        for index, text in entry.msgstr.items():
            if placeholders(text) != forms[index]:
                problems.append((entry.line, entry.msgid, index, text))
        if expected or forms[1]:
            assert "python-format" in entry.flags, f"line {entry.line}: {entry.msgid!r} needs #, python-format"
    assert problems == []


def test_translations_keep_the_times_sign_and_the_dash(messages):
    for entry in messages:
        for text in entry.msgstr.values():
            for character in ("×", "–"):
                assert entry.msgid.count(character) == text.count(character), (entry.msgid, text)


def test_translations_carry_no_currency_symbols(messages):
    """Money is formatted by Babel in the templates, never by the strings."""
    for entry in messages:
        for text in entry.msgstr.values():
            assert not re.search(r"[€$£¥]|\bEUR\b", text), text


def test_msgfmt_accepts_the_catalogue():
    msgfmt = shutil.which("msgfmt")
    if msgfmt is None:
        pytest.skip("needs gettext's msgfmt")
    result = subprocess.run([msgfmt, "--check", "--statistics", "-o", "/dev/null", str(PO_FILE)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "untranslated" not in result.stderr and "fuzzy" not in result.stderr, result.stderr


def test_compiled_catalogue_matches_the_po_file(messages):
    """django.mo is what Django loads: it must hold exactly the .po's translations (run compilemessages)."""
    with MO_FILE.open("rb") as handle:
        compiled = stdlib_gettext.GNUTranslations(handle)
    for entry in messages:
        if entry.msgid_plural is None:
            assert compiled.gettext(entry.msgid) == entry.msgstr[0], entry.msgid
        else:
            assert compiled.ngettext(entry.msgid, entry.msgid_plural, 1) == entry.msgstr[0], entry.msgid
            assert compiled.ngettext(entry.msgid, entry.msgid_plural, 2) == entry.msgstr[1], entry.msgid


def test_django_loads_the_german_catalogue():
    with translation.override("de"):
        assert translation.gettext("Sign in") == "Anmelden"
        assert translation.ngettext("%(remaining)s of %(total)s day", "%(remaining)s of %(total)s days", 31) \
            % {"remaining": 3, "total": 31} == "3 von 31 Tagen"
    with translation.override("en"):
        assert translation.gettext("Sign in") == "Sign in"


# --- pages in German -----------------------------------------------------------------------------------------


@pytest.fixture
def setup(db):
    return live_subscription_setup()  # the portal prices "now"


def test_sign_in_page_in_german_by_accept_language(client, db):
    page = client.get(reverse("portal:login"), HTTP_ACCEPT_LANGUAGE="de").content.decode()
    assert '<html lang="de">' in page
    assert "<title>Anmelden · Crossgrade</title>" in page
    assert "<h1>Anmelden</h1>" in page
    assert "Benutzername" in page and "Passwort" in page
    assert "Zum Inhalt springen" in page
    assert "Sign in" not in page and "Username" not in page


def test_overview_in_german_by_language_cookie(client, setup):
    client.force_login(setup.owner)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "de"
    response = client.get(reverse("portal:overview", args=[setup.customer.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    assert '<html lang="de">' in page
    assert "<title>Übersicht · Crossgrade</title>" in page
    for heading in ("Was Sie jetzt nutzen können", "Guthaben und Zahlung"):
        assert f">{heading}</h2>" in page
    for text in ("Abrechnungszeitraum", "Nächste Verlängerung", "Nutzerplätze", "pro Nutzerplatz",
                 "Tarif oder Nutzerplätze ändern", "Tarif herabstufen oder kündigen", "Abrechnungsverlauf",
                 "Abmelden", "Aktiv"):
        assert text in page, text
    for english in ("What you can use now", "Balance and payment", "Billing period", "Next renewal", "Sign out"):
        assert english not in page, english


def test_plans_page_in_german(client, setup):
    client.force_login(setup.owner)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "de"
    page = client.get(reverse("portal:plans", args=[setup.customer.pk, setup.subscription.pk])).content.decode()
    assert "Tarife für Analytics" in page
    assert "heute fällig" in page
    assert "Ihr aktueller Tarif" in page
    assert "due today" not in page


# --- quote lines in German ---------------------------------------------------------------------------------------


def _quote_lines(s, to_price_name: str) -> list[dict]:
    """Basic × 5 monthly, changed in the middle of January 2026 (the factories' fixed period)."""
    quote = quote_price(subscription=s.subscription, to_price=getattr(s, to_price_name), quantity=5, now=MID_JANUARY)
    return quote.lines


@pytest.mark.django_db
def test_line_text_in_german_rebuilds_the_sentence_with_german_month_names():
    credit, charge = _quote_lines(subscription_setup(), "pro_month")
    assert credit["kind"] == "credit" and charge["kind"] == "charge"
    with translation.override("de"):
        credit_text, charge_text = line_text(credit), line_text(charge)
    start, end = parse_datetime(credit["start"]), parse_datetime(credit["end"])
    span = f"{format_date(start, 'd. MMM', locale='de')} – {format_date(end, 'd. MMM y', locale='de')}"
    assert span == "16. Jan. – 1. Feb. 2026"
    assert credit_text == f"Ungenutzte Zeit für Analytics Basic × 5, {span} (16 von 31 Tagen)"
    assert charge_text == f"Verbleibende Zeit für Analytics Pro × 5, {span} (16 von 31 Tagen)"


@pytest.mark.django_db
def test_line_text_in_german_for_a_new_annual_period():
    lines = _quote_lines(subscription_setup(), "pro_year")
    charge = next(line for line in lines if line["kind"] == "charge")
    with translation.override("de"):
        text = line_text(charge)
    assert text == "Neuer Abrechnungszeitraum für Analytics Pro × 5, 16. Jan. 2026 – 16. Jan. 2027 (jährlich)"


@pytest.mark.django_db
def test_line_text_in_english_is_the_engines_own_description():
    s = subscription_setup()
    lines = [*_quote_lines(s, "pro_month"), *_quote_lines(s, "pro_year")]
    assert len(lines) == 4
    with translation.override("en"):
        for line in lines:
            assert line_text(line) == line["description"]
    with translation.override("de"):
        assert all(line_text(line) != line["description"] for line in lines)
