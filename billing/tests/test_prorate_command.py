"""`manage.py prorate FILE|-`, the calculator of shared/PRORATION.md: its input, output and refusals."""

from __future__ import annotations

import copy
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# The example input of PRORATION.md, verbatim.
EXAMPLE: dict[str, Any] = {
    "currency": "EUR",
    "timezone": "Europe/Berlin",
    "granularity": "day",
    "period_start": "2026-01-01T00:00:00+01:00",
    "period_end": "2026-02-01T00:00:00+01:00",
    "change_at": "2026-01-16T12:00:00+01:00",
    "current": {"unit_amount": "30.00", "quantity": 5, "interval": "month", "discount_percent": "0"},
    "target": {"unit_amount": "50.00", "quantity": 5, "interval": "month"},
    "tax": {"rate": "0.19", "inclusive": False},
    "customer_balance": "0.00",
}

OUTPUT_KEYS = [
    "currency", "remaining", "total_units", "unit", "lines", "subtotal", "tax", "total",
    "balance_applied", "amount_due", "balance_after", "period_start", "period_end",
]

_MISSING = object()


def example(**changes: Any) -> dict[str, Any]:
    """EXAMPLE with dotted-path changes: example(**{"current.quantity": -1}); _MISSING deletes the key."""
    data = copy.deepcopy(EXAMPLE)
    for path, value in changes.items():
        *parents, key = path.split(".")
        node = data
        for parent in parents:
            node = node[parent]
        if value is _MISSING:
            del node[key]
        else:
            node[key] = value
    return data


def run(monkeypatch, text: str, path: str = "-") -> tuple[int, str, str]:
    """The command through call_command, standard input replaced by `text`: (status, stdout, stderr)."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    stdout, stderr = io.StringIO(), io.StringIO()
    status = 0
    try:
        call_command("prorate", path, stdout=stdout, stderr=stderr)
    except SystemExit as exc:
        status = exc.code
    return status, stdout.getvalue(), stderr.getvalue()


def prorate_json(monkeypatch, data: Any) -> dict[str, Any]:
    status, out, err = run(monkeypatch, json.dumps(data))
    assert (status, err) == (0, "")
    return json.loads(out)


# --- good input ------------------------------------------------------------------------


EXAMPLE_A_AMOUNTS = {
    "currency": "EUR",
    "remaining": 16,
    "total_units": 31,
    "unit": "day",
    "subtotal": "51.61",
    "tax": "9.81",
    "total": "61.42",
    "balance_applied": "0.00",
    "amount_due": "61.42",
    "balance_after": "0.00",
    "period_start": "2026-01-01T00:00:00+01:00",
    "period_end": "2026-02-01T00:00:00+01:00",
}


def check_example_a(output: dict[str, Any]) -> None:
    assert list(output) == OUTPUT_KEYS
    assert {key: value for key, value in output.items() if key != "lines"} == EXAMPLE_A_AMOUNTS
    assert [(line["kind"], line["amount"]) for line in output["lines"]] == [("credit", "-77.42"), ("charge", "129.03")]
    assert all(list(line) == ["kind", "description", "amount"] for line in output["lines"])
    assert all(isinstance(line["description"], str) and line["description"] for line in output["lines"])


def test_example_through_standard_input(monkeypatch):
    status, out, err = run(monkeypatch, json.dumps(EXAMPLE))
    assert status == 0
    assert err == ""
    check_example_a(json.loads(out))


def test_example_through_a_file(monkeypatch, tmp_path):
    path = tmp_path / "change.json"
    path.write_text(json.dumps(EXAMPLE, indent=2), encoding="utf-8")
    # Standard input holds something else entirely: the file must be what is read.
    status, out, err = run(monkeypatch, "not json", path=str(path))
    assert (status, err) == (0, "")
    check_example_a(json.loads(out))


def test_amount_strings_keep_the_minor_unit_digits(monkeypatch):
    # Example A's VAT yields "61.42"; the trailing zero of "0.00" and "129.03" is kept, never a number.
    output = prorate_json(monkeypatch, EXAMPLE)
    amounts = [output[key] for key in ("subtotal", "tax", "total", "balance_applied", "amount_due", "balance_after")]
    assert amounts == ["51.61", "9.81", "61.42", "0.00", "61.42", "0.00"]


def test_example_c_in_yen_has_no_decimals(monkeypatch):
    output = prorate_json(monkeypatch, {
        "currency": "JPY",
        "granularity": "second",
        "period_start": "2026-01-01T00:00:00+00:00",
        "period_end": "2026-01-01T02:46:40+00:00",  # 10 000 s
        "change_at": "2026-01-01T02:05:00+00:00",  # 2 500 s before the end
        "current": {"unit_amount": "1000", "quantity": 3},
        "target": {"unit_amount": "3000", "quantity": 3},
    })
    assert (output["remaining"], output["total_units"], output["unit"]) == (2500, 10000, "second")
    assert [(line["kind"], line["amount"]) for line in output["lines"]] == [("credit", "-750"), ("charge", "2250")]
    assert (output["subtotal"], output["tax"], output["total"]) == ("1500", "0", "1500")
    assert (output["balance_applied"], output["amount_due"], output["balance_after"]) == ("0", "1500", "0")


@pytest.mark.parametrize(
    ("currency", "balance", "applied", "due", "after"),
    [("JPY", "500.00", "500", "1000", "0"), ("JPY", "0.00", "0", "1500", "0"), ("KWD", "1.5", "1.500", "1498.500", "0.000")],
)
def test_balances_written_with_other_digits_print_with_the_currencys(monkeypatch, currency, balance, applied, due, after):
    output = prorate_json(monkeypatch, {
        "currency": currency,
        "granularity": "second",
        "period_start": "2026-01-01T00:00:00+00:00",
        "period_end": "2026-01-01T02:46:40+00:00",
        "change_at": "2026-01-01T02:05:00+00:00",
        "current": {"unit_amount": "1000", "quantity": 3},
        "target": {"unit_amount": "3000", "quantity": 3},
        "customer_balance": balance,
    })
    assert (output["balance_applied"], output["amount_due"], output["balance_after"]) == (applied, due, after)


def test_kwd_has_three_decimals(monkeypatch):
    output = prorate_json(monkeypatch, example(**{
        "currency": "KWD",
        "change_at": "2026-01-01T00:00:00+01:00",  # the first day: the full period
        "current.unit_amount": "0",
        "target.unit_amount": "12.345",
        "target.quantity": 1,
        "tax": _MISSING,
    }))
    assert [(line["kind"], line["amount"]) for line in output["lines"]] == [("charge", "12.345")]
    assert (output["subtotal"], output["tax"], output["total"], output["amount_due"]) == ("12.345", "0.000", "12.345", "12.345")


def test_description_of_the_credit(monkeypatch):
    output = prorate_json(monkeypatch, example(**{"current.name": "Basic"}))
    assert output["lines"][0]["description"] == "Unused time on Basic × 5, 16 Jan – 1 Feb 2026 (16 of 31 days)"


def test_description_is_printed_as_utf8_not_escaped():
    # "×" and "–" reach the reader as characters, not as \u00d7 escapes.
    result = subprocess.run(
        [sys.executable, "manage.py", "prorate", "-"],
        input=json.dumps(example(**{"current.name": "Basic"})).encode(),
        capture_output=True, cwd=PROJECT_ROOT, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert "Unused time on Basic × 5, 16 Jan – 1 Feb 2026 (16 of 31 days)".encode() in result.stdout


def test_example_b_interval_change(monkeypatch):
    output = prorate_json(monkeypatch, example(**{
        "current.unit_amount": "50.00",
        "target.unit_amount": "500.00",
        "target.interval": "year",
        "tax": _MISSING,
    }))
    assert [(line["kind"], line["amount"]) for line in output["lines"]] == [("credit", "-129.03"), ("charge", "2500.00")]
    assert (output["subtotal"], output["total"]) == ("2370.97", "2370.97")
    assert (output["period_start"], output["period_end"]) == ("2026-01-16T12:00:00+01:00", "2027-01-16T12:00:00+01:00")


def test_defaults(monkeypatch):
    """Timezone UTC, day granularity, quantity 1, no discount, no tax, balance 0."""
    output = prorate_json(monkeypatch, {
        "currency": "EUR",
        "period_start": "2026-01-01T00:00:00+00:00",
        "period_end": "2026-02-01T00:00:00+00:00",
        "change_at": "2026-01-15T23:30:00+00:00",  # still 15 Jan in UTC: 17 of 31 days
        "current": {"unit_amount": "150.00"},
        "target": {"unit_amount": "250.00"},
    })
    assert (output["remaining"], output["total_units"], output["unit"]) == (17, 31, "day")
    # −R(150 × 17/31) = −82.26; R(250 × 17/31) = 137.10
    assert [line["amount"] for line in output["lines"]] == ["-82.26", "137.10"]
    assert (output["tax"], output["total"], output["amount_due"]) == ("0.00", "54.84", "54.84")
    assert (output["balance_applied"], output["balance_after"]) == ("0.00", "0.00")
    assert (output["period_start"], output["period_end"]) == ("2026-01-01T00:00:00+00:00", "2026-02-01T00:00:00+00:00")


def test_tax_inclusive(monkeypatch):
    output = prorate_json(monkeypatch, example(**{"tax.inclusive": True}))
    assert (output["subtotal"], output["tax"], output["total"]) == ("51.61", "8.24", "51.61")


@pytest.mark.parametrize(
    ("balance", "applied", "due", "after"),
    [("10.00", "10.00", "51.42", "0.00"), ("100.00", "61.42", "0.00", "38.58")],
)
def test_customer_balance(monkeypatch, balance, applied, due, after):
    output = prorate_json(monkeypatch, example(customer_balance=balance))
    assert (output["total"], output["balance_applied"], output["amount_due"], output["balance_after"]) == (
        "61.42", applied, due, after,
    )


def test_downgrade_keeps_the_credit_as_balance(monkeypatch):
    output = prorate_json(monkeypatch, example(**{
        "current.unit_amount": "50.00", "target.unit_amount": "30.00", "customer_balance": "10.00",
    }))
    assert (output["subtotal"], output["tax"], output["total"]) == ("-51.61", "-9.81", "-61.42")
    assert (output["balance_applied"], output["amount_due"], output["balance_after"]) == ("0.00", "0.00", "71.42")


@pytest.mark.parametrize("granularity", ["day", "second"])
def test_times_without_offset_are_local_to_the_billing_timezone(monkeypatch, granularity):
    """Across the start of summer time (29 Mar 2026 in Berlin): 31 days, but 31 × 24 h − 1 h."""
    with_offsets = {
        "currency": "EUR",
        "timezone": "Europe/Berlin",
        "granularity": granularity,
        "period_start": "2026-03-01T00:00:00+01:00",
        "period_end": "2026-04-01T00:00:00+02:00",
        "change_at": "2026-03-16T12:00:00+01:00",
        "current": {"unit_amount": "100.00"},
        "target": {"unit_amount": "0.00"},
    }
    local = dict(with_offsets, period_start="2026-03-01T00:00:00", period_end="2026-04-01T00:00:00",
                 change_at="2026-03-16T12:00:00")
    expected = {"day": (16, 31, "-51.61"), "second": (1_335_600, 2_674_800, "-49.93")}[granularity]
    for data in (with_offsets, local):
        output = prorate_json(monkeypatch, data)
        assert (output["remaining"], output["total_units"], output["lines"][0]["amount"]) == expected


# --- bad input ----------------------------------------------------------------------------


BAD_INPUT = [
    # (id, standard input, the field the error line must name)
    ("malformed JSON", '{"currency": "EUR",', "input"),
    ("not JSON at all", "currency=EUR", "input"),
    ("empty input", "", "input"),
    ("a list, not an object", json.dumps([EXAMPLE]), "input"),
    ("a string, not an object", json.dumps("EUR"), "input"),
    ("a number, not an object", "42", "input"),
    ("null, not an object", "null", "input"),
    ("unknown currency", json.dumps(example(currency="EUX")), "currency"),
    ("currency as a number", json.dumps(example(currency=978)), "currency"),
    ("unknown timezone", json.dumps(example(timezone="Mars/Olympus_Mons")), "timezone"),
    ("timezone that is a directory", json.dumps(example(timezone="Europe")), "timezone"),
    ("empty timezone", json.dumps(example(timezone="")), "timezone"),
    ("change_at before the period", json.dumps(example(change_at="2025-12-31T23:59:59+01:00")), "change_at"),
    ("change_at at period_end", json.dumps(example(change_at="2026-02-01T00:00:00+01:00")), "change_at"),
    ("change_at after the period", json.dumps(example(change_at="2026-03-01T00:00:00+01:00")), "change_at"),
    ("empty period", json.dumps(example(period_end="2026-01-01T00:00:00+01:00")), "period_end"),
    ("inverted period", json.dumps(example(period_end="2025-12-01T00:00:00+01:00")), "period_end"),
    ("negative current unit_amount", json.dumps(example(**{"current.unit_amount": "-30.00"})), "current.unit_amount"),
    ("negative target unit_amount", json.dumps(example(**{"target.unit_amount": "-0.01"})), "target.unit_amount"),
    ("unit_amount not a number", json.dumps(example(**{"current.unit_amount": "thirty"})), "current.unit_amount"),
    ("negative current quantity", json.dumps(example(**{"current.quantity": -5})), "current.quantity"),
    ("negative target quantity", json.dumps(example(**{"target.quantity": -1})), "target.quantity"),
    ("fractional quantity", '{"currency": "EUR", "period_start": "2026-01-01T00:00:00+01:00", '
     '"period_end": "2026-02-01T00:00:00+01:00", "change_at": "2026-01-16T12:00:00+01:00", '
     '"current": {"unit_amount": "30.00", "quantity": 2.5}, "target": {"unit_amount": "50.00"}}', "current.quantity"),
    ("negative tax rate", json.dumps(example(**{"tax.rate": "-0.01"})), "tax.rate"),
    ("tax rate above 1", json.dumps(example(**{"tax.rate": "1.19"})), "tax.rate"),
    ("negative customer_balance", json.dumps(example(customer_balance="-0.01")), "customer_balance"),
    ("missing currency", json.dumps(example(currency=_MISSING)), "currency"),
    ("missing period_start", json.dumps(example(period_start=_MISSING)), "period_start"),
    ("missing period_end", json.dumps(example(period_end=_MISSING)), "period_end"),
    ("missing change_at", json.dumps(example(change_at=_MISSING)), "change_at"),
    ("missing current", json.dumps(example(current=_MISSING)), "current"),
    ("missing target", json.dumps(example(target=_MISSING)), "target"),
    ("missing current unit_amount", json.dumps(example(**{"current.unit_amount": _MISSING})), "current.unit_amount"),
    ("missing tax rate", json.dumps(example(**{"tax.rate": _MISSING})), "tax.rate"),
    ("current not an object", json.dumps(example(current="Basic")), "current"),
    ("unknown granularity", json.dumps(example(granularity="hour")), "granularity"),
    ("unknown interval", json.dumps(example(**{"target.interval": "week"})), "target.interval"),
    ("interval not a string", json.dumps(example(**{"current.interval": ["month"]})), "current.interval"),
    ("discount above 100", json.dumps(example(**{"current.discount_percent": "150"})), "current.discount_percent"),
    ("period_start not a date-time", json.dumps(example(period_start="yesterday")), "period_start"),
    ("tax not an object", json.dumps(example(tax="19%")), "tax"),
    ("tax.inclusive not a boolean", json.dumps(example(**{"tax.inclusive": "yes"})), "tax.inclusive"),
    ("unknown credit mode", json.dumps(example(credit="half")), "credit"),
]


def assert_one_line_naming(stderr: str, field: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert stderr.endswith("\n")
    assert lines[0].startswith(f"prorate: {field}: "), lines[0]
    assert "Traceback" not in stderr


@pytest.mark.parametrize(("text", "field"), [case[1:] for case in BAD_INPUT], ids=[case[0] for case in BAD_INPUT])
def test_bad_input_exits_2_with_one_line_naming_the_field(monkeypatch, text, field):
    status, out, err = run(monkeypatch, text)
    assert status == 2
    assert out == ""
    assert_one_line_naming(err, field)


def test_malformed_json_says_so(monkeypatch):
    _, _, err = run(monkeypatch, '{"currency": "EUR",')
    assert "malformed JSON" in err


def test_missing_file(monkeypatch, tmp_path):
    status, out, err = run(monkeypatch, "", path=str(tmp_path / "absent.json"))
    assert (status, out) == (2, "")
    assert_one_line_naming(err, "FILE")
    assert "absent.json" in err


def test_a_newline_in_a_bad_value_does_not_split_the_error_line(monkeypatch):
    status, _, err = run(monkeypatch, json.dumps(example(timezone="Mars/\nOlympus_Mons")))
    assert status == 2
    assert_one_line_naming(err, "timezone")


# --- the real process: exit status and standard error --------------------------------------


def run_process(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "prorate", "-"],
        input=text, capture_output=True, text=True, encoding="utf-8", cwd=PROJECT_ROOT, timeout=120, check=False,
    )


def test_process_good_input():
    result = run_process(json.dumps(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    check_example_a(json.loads(result.stdout))


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"currency": "EUR",', "input"),
        (json.dumps(example(timezone="Europe")), "timezone"),
        (json.dumps(example(**{"current.quantity": -5})), "current.quantity"),
        (json.dumps(example(**{"current.interval": ["month"]})), "current.interval"),
    ],
    ids=["malformed JSON", "timezone that is a directory", "negative quantity", "interval not a string"],
)
def test_process_bad_input(text, field):
    result = run_process(text)
    assert result.returncode == 2
    assert result.stdout == ""
    assert_one_line_naming(result.stderr, field)


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"current": {"unit_amount": "1e30", "quantity": 5}}, "current.unit_amount"),
        ({"target": {"unit_amount": "50.00", "quantity": 10**12}}, "target.quantity"),
        ({"customer_balance": "10.005"}, "customer_balance"),
        ({"customer_balance": "1e40"}, "customer_balance"),
    ],
)
def test_out_of_bounds_amounts_are_refused_not_rounded(monkeypatch, patch, field):
    status, out, err = run(monkeypatch, json.dumps({**EXAMPLE, **patch}))
    assert status == 2 and out == ""
    assert_one_line_naming(err, field)


def test_file_that_is_not_utf8_is_refused(monkeypatch, tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"currency": "EUR", "name": "M\xfcller"}')
    status, out, err = run(monkeypatch, "", path=str(path))
    assert status == 2 and out == ""
    assert_one_line_naming(err, "FILE")
