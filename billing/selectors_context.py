"""Read-mostly rows read once per unit of work and passed down explicitly.

A `ReadContext` is made by whoever starts a unit of work (one request, one chunk of the sweep or of a bulk job,
one bulk-job preview) and handed down as `ctx=`; it is dropped when that unit ends, so nothing outlives it and
nothing is shared between processes or requests (ARCHITECTURE.md: no in-memory state that matters). Each part
is read on first use: a single change reads only what it needs, once, instead of the legal entity four times;
a chunk of 100 changes reads the catalog rows, the change rules, the tax rates and the legal entity once.

Within one unit of work the catalog is as it was when first read. Prices are frozen once created (amount,
currency, interval, pricing and tiers; models.Price), so that only matters for an edit to a rule, a tax rate, a
plan's features or a price's availability made while a chunk runs: the chunk finishes as of its start, as a
chunk that started a moment later would have seen it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from billing.models import ApprovalPolicy, ChangeRule, Customer, Feature, LegalEntity, PlanFeature, Price, TaxRate
from billing.tax import TaxDecision, tax_decision

_UNSET = object()


class ReadContext:
    """The legal entity, change rules, tax rates and catalog rows (prices with their plan, product and tiers;
    features; the features each plan grants) of one unit of work, each read on first use."""

    def __init__(self) -> None:
        self._entity: LegalEntity | None | object = _UNSET
        self._rules: list[ChangeRule] | None = None
        self._tax_rates: dict[str, list[TaxRate]] | None = None
        self._prices: dict[int, Price] = {}
        self._features: list[Feature] | None = None
        self._plan_features: dict[int, list[PlanFeature]] = {}
        self._approval_policies: list[ApprovalPolicy] | None = None

    # --- the seller and the rules --------------------------------------------------------------------------------

    def legal_entity(self) -> LegalEntity | None:
        """As selectors.legal_entity_default."""
        if self._entity is _UNSET:
            self._entity = LegalEntity.objects.filter(is_default=True).first()
        return self._entity  # type: ignore[return-value]

    def change_rules(self) -> list[ChangeRule]:
        """The active change rules in position order (what quotes.change_rule_find matches against)."""
        if self._rules is None:
            self._rules = list(ChangeRule.objects.filter(is_active=True).order_by("position", "id"))
        return self._rules

    def approval_policies(self) -> list[ApprovalPolicy]:
        """The active approval policies in position order, their steps and groups prefetched (as
        approvals.approval_hold_for reads them)."""
        if self._approval_policies is None:
            self._approval_policies = list(ApprovalPolicy.objects.filter(is_active=True)
                                           .prefetch_related("steps__group").order_by("position", "pk"))
        return self._approval_policies

    # --- tax -----------------------------------------------------------------------------------------------------

    def tax_rate_for(self, *, country: str, on: date, region: str = "") -> TaxRate | None:
        """As selectors.tax_rate_for, from the rates read once: the region's rate in force on that day if it has
        one, else the country's."""
        if self._tax_rates is None:
            self._tax_rates = {}
            for rate in TaxRate.objects.order_by("country", "-valid_from"):
                self._tax_rates.setdefault(rate.country, []).append(rate)
        rates = [r for r in self._tax_rates.get(country, ()) if r.valid_from <= on]  # newest first
        if region:
            regional = next((r for r in rates if r.region == region), None)
            if regional is not None:
                return regional
        return next((r for r in rates if r.region == ""), None)

    def tax_decision_for(self, *, customer: Customer, on: date) -> TaxDecision:
        """As selectors.tax_decision_for with the default legal entity."""
        entity = self.legal_entity()
        rate = self.tax_rate_for(country=customer.country, on=on, region=customer.region)
        return tax_decision(seller_country=entity.country if entity else "", buyer_country=customer.country,
                            buyer_vat_id=customer.vat_id, country_rate=rate.rate if rate else None)

    # --- the catalog ---------------------------------------------------------------------------------------------

    def price(self, price_id: int) -> Price:
        """The price with its plan, its product and its tiers (one query the first time, none after)."""
        price = self._prices.get(price_id)
        if price is None:
            price = Price.objects.select_related("plan__product").prefetch_related("tiers").get(pk=price_id)
            self._prices[price_id] = price
        return price

    def features(self) -> list[Feature]:
        """Every feature in the order entitlements list them."""
        if self._features is None:
            self._features = list(Feature.objects.order_by("sort_order", "code"))
        return self._features

    def plan_features(self, plan_ids: Iterable[int]) -> list[PlanFeature]:
        """The features these plans grant (enabled rows, with their feature). Treat them as read-only."""
        plan_ids = set(plan_ids)
        missing = plan_ids - self._plan_features.keys()
        if missing:
            for plan_id in missing:
                self._plan_features[plan_id] = []
            for grant in PlanFeature.objects.filter(plan_id__in=missing, enabled=True).select_related("feature"):
                self._plan_features[grant.plan_id].append(grant)
        return [grant for plan_id in plan_ids for grant in self._plan_features[plan_id]]
