"""`manage.py prorate` with volume tiers: optional `tiers_mode` and `tiers` on current/target, bands in the output,
bad tiers refused on exit status 2 naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from billing.tests.test_prorate_command import _MISSING, EXAMPLE, assert_one_line_naming, example, run, run_process

BANDS = [{"up_to": 10, "unit_amount": "10.00"}, {"up_to": None, "unit_amount": "8.00"}]


def tiered(mode: str, quantity: int = 25, tiers: Any = BANDS, **item: Any) -> dict[str, Any]:
    """Example A with the target on a tiered price: 1–10 seats at 10.00, 11 or more at 8.00."""
    return example(target={"tiers_mode": mode, "tiers": tiers, "quantity": quantity, "interval": "month", **item})


def prorate_json(monkeypatch, data: Any) -> dict[str, Any]:
    status, out, err = run(monkeypatch, json.dumps(data))
    assert (status, err) == (0, "")
    return json.loads(out)


def test_graduated_target_with_its_bands(monkeypatch):
    output = prorate_json(monkeypatch, tiered("graduated"))
    credit, charge = output["lines"]
    assert list(credit) == ["kind", "description", "amount"]  # an untiered line is unchanged
    assert credit["amount"] == "-77.42"  # −R(5 × 30.00 × 16/31)
    # R((10 × 10.00 + 15 × 8.00) × 16/31) = R(220 × 16/31) = R(113.548…) = 113.55
    assert charge["amount"] == "113.55"
    assert charge["tiers_mode"] == "graduated" and charge["tiered_amount"] == "220.00"
    assert charge["bands"] == [
        {"from": 1, "to": 10, "quantity": 10, "unit_amount": "10.00", "flat_amount": "0.00", "amount": "100.00",
         "tier_from": 1, "tier_to": 10},
        {"from": 11, "to": 25, "quantity": 15, "unit_amount": "8.00", "flat_amount": "0.00", "amount": "120.00",
         "tier_from": 11, "tier_to": None},
    ]
    # subtotal 113.55 − 77.42 = 36.13; tax R(36.13 × 0.19) = R(6.8647) = 6.86; total 42.99
    assert (output["subtotal"], output["tax"], output["total"]) == ("36.13", "6.86", "42.99")


def test_volume_target_with_a_discount(monkeypatch):
    output = prorate_json(monkeypatch, tiered("volume", discount_percent="10"))
    charge = output["lines"][1]
    # R(25 × 8.00 × 16/31 × 0.9) = R(2880/31) = R(92.903…) = 92.90
    assert charge["amount"] == "92.90" and charge["tiered_amount"] == "200.00"
    assert charge["bands"] == [{"from": 1, "to": 25, "quantity": 25, "unit_amount": "8.00", "flat_amount": "0.00",
                                "amount": "200.00", "tier_from": 11, "tier_to": None}]
    assert charge["description"].endswith("less 10% discount")


def test_flat_fees_and_the_band_edge(monkeypatch):
    tiers = [{"up_to": 10, "unit_amount": "10.00", "flat_amount": "20.00"},
             {"up_to": None, "unit_amount": "8.00", "flat_amount": "5.00"}]
    # graduated 10 seats: 10 × 10.00 + 20.00 = 120.00 (band 2 not reached); R(120 × 16/31) = R(61.935…) = 61.94
    output = prorate_json(monkeypatch, tiered("graduated", quantity=10, tiers=tiers))
    assert (output["lines"][1]["amount"], output["lines"][1]["tiered_amount"]) == ("61.94", "120.00")
    # volume 11 seats: 11 × 8.00 + 5.00 = 93.00; R(93 × 16/31) = 48.00
    output = prorate_json(monkeypatch, tiered("volume", quantity=11, tiers=tiers))
    assert (output["lines"][1]["amount"], output["lines"][1]["tiered_amount"]) == ("48.00", "93.00")


def test_a_tiered_current_item_is_credited_from_its_bands(monkeypatch):
    data = example(current={"tiers_mode": "volume", "tiers": BANDS, "quantity": 11})
    output = prorate_json(monkeypatch, data)
    # −R(11 × 8.00 × 16/31) = −R(45.419…) = −45.42
    assert output["lines"][0]["amount"] == "-45.42" and output["lines"][0]["tiers_mode"] == "volume"


def test_jpy_and_kwd_minor_units(monkeypatch):
    jpy = tiered("graduated", quantity=13, tiers=[{"up_to": 10, "unit_amount": "1000"},
                                                  {"up_to": None, "unit_amount": "800"}])
    jpy.update(currency="JPY", tax=None, current={"unit_amount": "0", "quantity": 1})
    output = prorate_json(monkeypatch, jpy)
    # R((10 × 1000 + 3 × 800) × 16/31) = R(198400/31) = R(6400) = 6400
    assert output["lines"] == [{**output["lines"][0], "amount": "6400", "tiered_amount": "12400"}]
    kwd = tiered("volume", quantity=8, tiers=[{"up_to": 5, "unit_amount": "12.500"},
                                              {"up_to": None, "unit_amount": "9.750"}])
    kwd.update(currency="KWD", tax=None, current={"unit_amount": "0", "quantity": 1})
    output = prorate_json(monkeypatch, kwd)
    # R(8 × 9.750 × 16/31) = R(1248/31) = R(40.2580…) = 40.258
    assert [(line["amount"], line["tiered_amount"]) for line in output["lines"]] == [("40.258", "78.000")]


BAD_TIERS = [
    ("unknown tiers_mode", tiered("stepped"), "target.tiers_mode"),
    ("tiers_mode not a string", tiered(["graduated"]), "target.tiers_mode"),
    ("tiers without tiers_mode", example(**{"target.tiers": BANDS}), "target.tiers"),
    ("tiers_mode without tiers", example(**{"target.tiers_mode": "graduated", "target.unit_amount": _MISSING}),
     "target.tiers"),
    ("tiers not a list", tiered("graduated", tiers={"up_to": 10}), "target.tiers"),
    ("no bands", tiered("volume", tiers=[]), "target.tiers"),
    ("unit_amount beside tiers", tiered("graduated", unit_amount="10.00"), "target.unit_amount"),
    ("band not an object", tiered("graduated", tiers=["10 at 10.00"]), "target.tiers[0]"),
    ("band without up_to", tiered("graduated", tiers=[{"unit_amount": "10.00"}]), "target.tiers[0].up_to"),
    ("band without unit_amount", tiered("graduated", tiers=[{"up_to": None}]), "target.tiers[0].unit_amount"),
    ("up_to a string", tiered("graduated", tiers=[{"up_to": "10", "unit_amount": "1"}, BANDS[1]]),
     "target.tiers[0].up_to"),
    ("up_to fractional", tiered("graduated", tiers=[{"up_to": 2.5, "unit_amount": "1"}, BANDS[1]]),
     "target.tiers[0].up_to"),
    ("up_to zero", tiered("graduated", tiers=[{"up_to": 0, "unit_amount": "1"}, BANDS[1]]), "target.tiers[0].up_to"),
    ("bands overlapping", tiered("volume", tiers=[BANDS[0], BANDS[0], BANDS[1]]), "target.tiers[1].up_to"),
    ("bands descending", tiered("volume", tiers=[{"up_to": 20, "unit_amount": "9"}, BANDS[0], BANDS[1]]),
     "target.tiers[1].up_to"),
    ("open band not last", tiered("graduated", tiers=[BANDS[1], BANDS[0]]), "target.tiers[0].up_to"),
    ("no open-ended band", tiered("graduated", tiers=[BANDS[0]]), "target.tiers[0].up_to"),
    ("negative band price", tiered("graduated", tiers=[BANDS[0], {"up_to": None, "unit_amount": "-8.00"}]),
     "target.tiers[1].unit_amount"),
    ("band price not a number", tiered("graduated", tiers=[BANDS[0], {"up_to": None, "unit_amount": "eight"}]),
     "target.tiers[1].unit_amount"),
    ("negative flat fee", tiered("graduated", tiers=[BANDS[0], {**BANDS[1], "flat_amount": "-1"}]),
     "target.tiers[1].flat_amount"),
    ("bad current band", example(current={"tiers_mode": "volume", "tiers": [BANDS[0]], "quantity": 3}),
     "current.tiers[0].up_to"),
]


@pytest.mark.parametrize(("data", "field"), [case[1:] for case in BAD_TIERS], ids=[case[0] for case in BAD_TIERS])
def test_bad_tiers_exit_2_with_one_line_naming_the_field(monkeypatch, data, field):
    status, out, err = run(monkeypatch, json.dumps(data))
    assert (status, out) == (2, "")
    assert_one_line_naming(err, field)


def test_a_real_process_prices_tiers_and_refuses_bad_ones():
    result = run_process(json.dumps(tiered("graduated")))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["lines"][1]["amount"] == "113.55"
    result = run_process(json.dumps(tiered("graduated", tiers=[BANDS[0]])))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("prorate: target.tiers[0].up_to: the last band must be open-ended")


def test_the_documented_input_without_tiers_is_unchanged(monkeypatch):
    output = prorate_json(monkeypatch, EXAMPLE)
    assert all(list(line) == ["kind", "description", "amount"] for line in output["lines"])


def test_the_documented_tiers_example_prices_as_docs_say(monkeypatch):
    """docs/plan-changes.md, "Volume tiers": the worked example's file and figures."""
    from billing.tests.test_prorate_command import PROJECT_ROOT

    status, out, err = run(monkeypatch, "", path=str(PROJECT_ROOT / "docs" / "examples" / "worked-example-tiers.json"))
    assert (status, err) == (0, "")
    output = json.loads(out)
    assert [line["amount"] for line in output["lines"]] == ["-77.42", "113.55"]
    assert (output["subtotal"], output["tax"], output["total"]) == ("36.13", "6.86", "42.99")
    assert output["lines"][1]["tiered_amount"] == "220.00"
    docs = (PROJECT_ROOT / "docs" / "plan-changes.md").read_text(encoding="utf-8")
    for figure in ("R(220.00 × 16/31) = R(113.548…) = 113.55", "R(36.13 × 0.19) = R(6.8647) = 6.86", "| 42.99 |"):
        assert figure in docs
