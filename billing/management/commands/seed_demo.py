"""`manage.py seed_demo`: the demo catalog, change rules, customers and logins. Idempotent."""

from __future__ import annotations

from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from billing import proration
from billing.models import (
    ChangeRule,
    Customer,
    ExchangeRate,
    Feature,
    LegalEntity,
    Membership,
    PaymentMethod,
    Plan,
    PlanFeature,
    Price,
    PriceTier,
    Product,
    Subscription,
    TaxRate,
)
from billing.services.collection import invoice_collect, invoices_collect_due
from billing.services.renewals import plan_changes_apply_due

DEMO_PASSWORD = "crossgrade-demo"
ADMIN_PASSWORD = "crossgrade-admin"

FEATURES = [
    # code, name, kind, unit
    ("seats", "Seats", "limit", "seats"),
    ("storage", "Storage", "limit", "GB"),
    ("api_calls", "API calls", "limit", "calls / month"),
    ("sso", "Single sign-on (SAML)", "boolean", ""),
    ("audit_log", "Audit log", "boolean", ""),
    ("priority_support", "Priority support", "boolean", ""),
]

# Per plan: rank, monthly EUR price, pricing, min/max seats, feature values (None = unlimited)
ANALYTICS = {
    "free": ("Free", 1, "0", "per_seat", 1, 3,
             {"seats": 3, "storage": 1, "api_calls": 1_000}),
    "starter": ("Starter", 2, "12", "per_seat", 1, 20,
                {"seats": 20, "storage": 25, "api_calls": 50_000}),
    "pro": ("Pro", 3, "30", "per_seat", 1, 100,
            {"seats": 100, "storage": 250, "api_calls": 500_000, "audit_log": True}),
    "business": ("Business", 4, "50", "per_seat", 3, 500,
                 {"seats": 500, "storage": 2_000, "api_calls": 5_000_000, "audit_log": True, "sso": True,
                  "priority_support": True}),
    "enterprise": ("Enterprise", 5, "90", "per_seat", 10, None,
                   {"seats": None, "storage": None, "api_calls": None, "audit_log": True, "sso": True,
                    "priority_support": True}),
}
COLLAB = {
    "basic": ("Basic", 1, "9", "flat", 1, 1, {"seats": 5, "storage": 10, "api_calls": 10_000}),
    "team": ("Team", 2, "29", "flat", 1, 1, {"seats": 25, "storage": 100, "api_calls": 100_000, "audit_log": True}),
    "business": ("Business", 3, "79", "flat", 1, 1,
                 {"seats": 100, "storage": 1_000, "api_calls": 1_000_000, "audit_log": True, "sso": True,
                  "priority_support": True}),
}
HELPDESK = {
    "solo": ("Solo", 1, "15", "per_seat", 1, 5, {"seats": 5, "storage": 10, "api_calls": 10_000}),
    "team": ("Team", 2, "12", "per_seat", 1, None,
             {"seats": None, "storage": 100, "api_calls": 100_000, "audit_log": True}),
    "scale": ("Scale", 3, "11", "per_seat", 10, None,
              {"seats": None, "storage": 1_000, "api_calls": 1_000_000, "audit_log": True, "sso": True,
               "priority_support": True}),
}
# Volume tiers per (product, plan): mode and bands (up to seats, monthly EUR per seat); the first band's price is the
# plan's EUR price above. Team is graduated (12.00 for seats 1–10, 10.00 for 11–50, 8.00 from 51); Scale is volume.
TIERS = {
    ("helpdesk", "team"): ("graduated", [(10, "12"), (50, "10"), (None, "8")]),
    ("helpdesk", "scale"): ("volume", [(25, "11"), (100, "9"), (None, "7")]),
}
# Currency: factor against EUR, and the rounding step of its prices.
CURRENCIES = {"EUR": (Decimal("1"), Decimal("0.01")), "USD": (Decimal("1.1"), Decimal("1")),
              "GBP": (Decimal("0.86"), Decimal("1")), "JPY": (Decimal("160"), Decimal("100"))}
INTERVALS = {"month": Decimal(1), "quarter": Decimal("2.85"), "year": Decimal(10)}  # annual: 2 months free
TAX_RATES = {"DE": "0.19", "FR": "0.20", "NL": "0.21", "AT": "0.20", "GB": "0.20", "JP": "0.10"}

CUSTOMERS = [
    # name, email, country, currency, timezone, granularity, payment method, members, subscriptions
    ("Acme GmbH", "billing@acme.example", "DE", "EUR", "Europe/Berlin", "day", ("pm_card_visa", "Visa ending 4242"),
     [("alice", "owner"), ("bob", "billing_admin"), ("carol", "member")],
     [("analytics", "pro", "month", 5), ("collab", "team", "month", 1), ("helpdesk", "team", "month", 12)]),
    ("Globex Inc", "ap@globex.example", "US", "USD", "America/New_York", "second",
     ("pm_card_authenticationRequired", "Visa ending 3184 (asks for authentication)"),
     [("dave", "owner")], [("analytics", "starter", "year", 10)]),
    ("Initech Ltd", "finance@initech.example", "GB", "GBP", "Europe/London", "day",
     ("pm_card_chargeDeclined", "Visa ending 0002 (declines)"),
     [("erin", "owner")], [("analytics", "starter", "month", 4)]),
    ("Tanaka KK", "keiri@tanaka.example", "JP", "JPY", "Asia/Tokyo", "day", ("pm_card_visa", "Visa ending 4242"),
     [("kenji", "owner")], [("analytics", "business", "month", 3)]),
    ("Société Exemple SA", "compta@exemple.example", "FR", "EUR", "Europe/Paris", "day",
     ("pm_card_visa", "Visa ending 4242"), [("fleur", "owner")], [("analytics", "pro", "month", 8)]),
    ("Umbrella AG", "einkauf@umbrella.example", "DE", "EUR", "Europe/Berlin", "day", ("pm_card_visa", "Visa ending 4242"),
     [("uma", "owner")], [("analytics", "business", "month", 60)]),
]
VAT_IDS = {"Société Exemple SA": "FR40303265045"}  # a valid French VAT ID: invoices are reverse-charged
RENEWAL_DUE = {"Initech Ltd"}  # monthly; its card declines, so the demo shows a past-due account
# Umbrella's enterprise contract over Analytics Business: committed seats and spend, negotiated prices (EUR per seat
# and month; the catalog asks 50 and 90), a budget cap per change and renewal terms.
CONTRACT = {"number": "ENT-2026-001", "customer": "Umbrella AG", "periods": 12, "committed_seats": 50,
            "minimum_spend": "2500.00", "purchase_order": "PO-2026-0815", "budget_cap": "1000.00",
            "prices": {"business": "45.00", "enterprise": "80.00"}}
# Approval policies: position, name, applies to, trigger, threshold, currency, roles in order
APPROVAL_POLICIES = [
    (10, "Price overrides: sales manager, then finance", "amendments", "price_override", None, "",
     ["Sales managers", "Finance"]),
    (20, "Discounts deeper than 25 %: sales manager, then finance", "amendments", "discount_above", "25", "",
     ["Sales managers", "Finance"]),
    (30, "Term changes: sales manager", "amendments", "term_change", None, "", ["Sales managers"]),
    (40, "More than €5,000 due: finance", "both", "amount_due_above", "5000", "EUR", ["Finance"]),
    (50, "Over the customer's budget cap: sales manager", "customer_changes", "budget_cap", None, "",
     ["Sales managers"]),
    (60, "Change rules that ask for approval: sales manager", "customer_changes", "change_rule", None, "",
     ["Sales managers"]),
]
APPROVER_PERMISSIONS = ["decide_approvalrequest", "view_approvalrequest", "view_approvalpolicy", "view_contract",
                        "view_contractprice", "view_amendment", "view_planchange", "view_customer"]

RULES = [
    # position, name, match, decision
    (10, "Enterprise is arranged with sales", {"to_plan": ("analytics", "enterprise")},
     {"allowed": False, "refusal_reason": "Enterprise plans are arranged with our sales team: "
                                          "write to sales@crossgrade.example and we will set it up with you."}),
    (20, "Monthly to annual: now, prorated", {"from_interval": "month", "to_interval": "year"}, {}),
    (21, "Quarterly to annual: now, prorated", {"from_interval": "quarter", "to_interval": "year"}, {}),
    (22, "Monthly to quarterly: now, prorated", {"from_interval": "month", "to_interval": "quarter"}, {}),
    (30, "Annual to monthly: at period end", {"from_interval": "year", "to_interval": "month"},
     {"timing": "period_end", "charge": "none", "credit": "none"}),
    (31, "Annual to quarterly: at period end", {"from_interval": "year", "to_interval": "quarter"},
     {"timing": "period_end", "charge": "none", "credit": "none"}),
    (32, "Quarterly to monthly: at period end", {"from_interval": "quarter", "to_interval": "month"},
     {"timing": "period_end", "charge": "none", "credit": "none"}),
    (100, "Upgrades: now, prorated", {"direction": "upgrade"}, {}),
    (110, "Cross-grades: now, prorated", {"direction": "crossgrade"}, {}),
    (120, "Downgrades: at period end", {"direction": "downgrade"},
     {"timing": "period_end", "charge": "none", "credit": "none"}),
    (130, "Cancellations: at period end", {"direction": "cancel"},
     {"timing": "period_end", "charge": "none", "credit": "none"}),
]


# Back-office groups (docs/back-office.md says who may do what). Permissions are only ever added here, never set:
# other work adds its own to these groups (approvals for "Sales managers" and "Finance").
CATALOG_VIEW = ["view_product", "view_plan", "view_price", "view_pricetier", "view_feature", "view_planfeature",
                "view_changerule"]
ACCOUNT_VIEW = ["view_customer", "view_membership", "view_paymentmethod", "view_subscription", "view_quote",
                "view_planchange"]
AMENDMENT_DRAFTING = ["view_contract", "view_contractprice", "view_amendment", "add_amendment", "change_amendment",
                      "view_subscription"]
BULK_CHANGES = ["view_bulkjob", "add_bulkjob", "run_bulk_job", "view_scheduledchange", "add_scheduledchange",
                "change_scheduledchange"]
STAFF_GROUPS = {
    # Answers customers: sees everything about an account, retries the sweep and cancels scheduled changes
    # ("change" on subscriptions and plan changes: their terms stay read-only), upgrades in an emergency, rolls back,
    # schedules staff changes and runs bulk jobs.
    "Support": [*ACCOUNT_VIEW, *CATALOG_VIEW, "support_view", "view_invoice", "view_invoiceline", "download_invoice",
                "view_paymentattempt", "view_balanceentry", "view_notification", "view_auditevent", "view_cashrefund",
                "view_planchangerollback", "change_subscription", "change_planchange", "emergency_upgrade",
                "rollback_plan_change", "view_featureusage", *BULK_CHANGES],
    # Sells: sees accounts, the catalog and quotes; drafts contract amendments (approvers decide them).
    "Sales": [*ACCOUNT_VIEW, *CATALOG_VIEW, *AMENDMENT_DRAFTING],
    # Approvers: what sales does, and decides approval requests as "Sales managers".
    "Sales managers": [*ACCOUNT_VIEW, *CATALOG_VIEW, *AMENDMENT_DRAFTING, *APPROVER_PERMISSIONS],
    # Documents, exports, cash refunds; rolls back changes (and may pay them back in cash); decides approval
    # requests as "Finance".
    "Finance": ["view_invoice", "view_invoiceline", "download_invoice", "export_invoices", "refund_credit_note",
                "view_cashrefund", "view_customer", "view_exchangerate", "add_exchangerate", "change_exchangerate",
                "view_balanceentry", "view_legalentity", "view_paymentattempt", "view_notification",
                "view_subscription", "view_planchange", "view_auditevent", "view_planchangerollback", "support_view",
                "rollback_plan_change", *APPROVER_PERMISSIONS],
}
# Retention (the retention app's permissions): support sees surveys, offers shown, trials (and may end one now),
# win-back and renewal-offer records; sales managers edit reasons, offers and campaigns; sales, sales managers
# and finance read the retention and win-back report.
RETENTION_VIEW = ["view_exitreason", "view_retentionoffer", "view_exitsurvey", "view_offerpresentation", "view_trial",
                  "view_renewaloffer", "view_renewalofferdismissal", "view_renewalofferquote", "view_winbackcampaign",
                  "view_winbackstep", "view_winbackenrolment", "view_winbacksend", "view_emailoptout"]
RETENTION_EDIT = [f"{verb}_{model}" for verb in ("add", "change", "delete")
                  for model in ("exitreason", "retentionoffer", "renewaloffer", "winbackcampaign", "winbackstep")]
RETENTION_GROUPS = {
    "Support": [*RETENTION_VIEW, "change_trial"],
    "Sales": [*RETENTION_VIEW, "view_retention_report"],
    "Sales managers": [*RETENTION_VIEW, *RETENTION_EDIT, "view_retention_report"],
    "Finance": ["view_offerpresentation", "view_winbackenrolment", "view_retention_report"],
}
DEMO_STAFF = [("sue", "Sue", "Support"), ("sam", "Sam", "Sales"), ("maria", "Maria", "Sales managers"),
              ("fiona", "Fiona", "Finance")]


def _price(eur: str, currency: str, interval: str) -> Decimal:
    factor, step = CURRENCIES[currency]
    amount = Decimal(eur) * factor * INTERVALS[interval]
    return (amount / step).quantize(Decimal(1), rounding=ROUND_HALF_UP) * step


class Command(BaseCommand):
    help = "Load the demo catalog, change rules, customers and logins (safe to run again)."

    def handle(self, *args, **options) -> None:
        now = timezone.now()
        with transaction.atomic():
            self._seed(now)
        # Periods that ended since the last run (and Initech's, on purpose) go through the real renewal step:
        # invoices issued and collected (Initech's card declines: past due, with its retry planned and emailed).
        renewed = plan_changes_apply_due(now=now)
        for invoice_id in invoices_collect_due(now=now):
            invoice_collect(invoice_id=invoice_id, now=now)
        if renewed:
            self.stdout.write(f"  Renewed {renewed} subscription period(s).")
        from retention.seed import seed_trials_demo  # trials of a higher tier and usage over a limit

        self.stdout.write(seed_trials_demo(now=now))

    def _seed(self, now) -> None:
        features = {code: Feature.objects.update_or_create(
            code=code, defaults={"name": name, "kind": kind, "unit": unit, "sort_order": i,
                                 "limit_from_quantity": code == "seats"})[0]
            for i, (code, name, kind, unit) in enumerate(FEATURES)}
        products = {
            "analytics": self._product("analytics", "Analytics", "Dashboards and reports on your data.", 1,
                                       ANALYTICS, features),
            "collab": self._product("collab", "Collaboration", "Shared workspaces for teams, priced per workspace.",
                                    2, COLLAB, features),
            "helpdesk": self._product("helpdesk", "Helpdesk", "Shared inboxes and tickets, with volume prices per seat.",
                                      3, HELPDESK, features),
        }
        LegalEntity.objects.update_or_create(is_default=True, defaults={
            "name": "Crossgrade GmbH", "address": "Musterstraße 1\n10115 Berlin\nGermany", "country": "DE",
            "vat_id": "DE136695976", "base_currency": "EUR", "invoice_prefix": "CG", "credit_note_prefix": "CGC"})
        for base, quote, rate in (("EUR", "USD", "1.0850"), ("EUR", "GBP", "0.8420"), ("EUR", "JPY", "162.50")):
            ExchangeRate.objects.update_or_create(base_currency=base, quote_currency=quote, valid_on=date(2026, 1, 1),
                                                  defaults={"rate": Decimal(rate)})
        for country, rate in TAX_RATES.items():
            TaxRate.objects.update_or_create(country=country, valid_from=date(2020, 1, 1),
                                             defaults={"rate": Decimal(rate), "name": "VAT"})
        for position, name, match, decision in RULES:
            fields = {"name": name, "allowed": True, "refusal_reason": "", "timing": "now", "charge": "prorated",
                      "credit": "prorated", "requires_approval": False, "direction": "", "from_interval": "",
                      "to_interval": "", "from_product": None, "from_plan": None, "to_product": None,
                      "to_plan": None, **decision}
            for key, value in match.items():
                fields[key] = (Plan.objects.get(product=products[value[0]], code=value[1])
                               if key.endswith("_plan") else value)
            ChangeRule.objects.update_or_create(position=position, defaults=fields)

        User = get_user_model()
        admin, created = User.objects.get_or_create(username="admin", defaults={
            "email": "admin@crossgrade.example", "is_staff": True, "is_superuser": True})
        if created:
            admin.set_password(ADMIN_PASSWORD)
            admin.save()
        for name, email, country, currency, tz, granularity, method, members, subs in CUSTOMERS:
            customer, _ = Customer.objects.update_or_create(name=name, defaults={
                "email": email, "country": country, "currency": currency, "timezone": tz,
                "granularity": granularity, "address": f"{name}\n1 Demo Street\n{country}",
                "vat_id": VAT_IDS.get(name, "")})
            PaymentMethod.objects.update_or_create(customer=customer, is_default=True, defaults={
                "gateway": "local", "reference": method[0], "label": method[1]})
            for username, role in members:
                user, created = User.objects.get_or_create(username=username, defaults={
                    "email": f"{username}@{email.split('@')[1]}", "first_name": username.title()})
                if created:
                    user.set_password(DEMO_PASSWORD)
                    user.save()
                Membership.objects.update_or_create(customer=customer, user=user, defaults={"role": role})
            for product_code, plan_code, interval, quantity in subs:
                self._subscription(customer, products[product_code], plan_code, interval, quantity, now)
        for name, codenames in STAFF_GROUPS.items():
            group, _ = Group.objects.get_or_create(name=name)
            group.permissions.add(*Permission.objects.filter(content_type__app_label="billing", codename__in=codenames))
            group.permissions.add(*Permission.objects.filter(content_type__app_label="retention",
                                                             codename__in=RETENTION_GROUPS.get(name, [])))
        for username, first_name, group_name in DEMO_STAFF:
            staff, created = User.objects.get_or_create(username=username, defaults={
                "email": f"{username}@crossgrade.example", "first_name": first_name, "is_staff": True})
            if created:
                staff.set_password(DEMO_PASSWORD)
                staff.save()
            staff.groups.add(Group.objects.get(name=group_name))
        self._approvals(Group.objects.get(name="Finance"), now)
        from retention.demo import retention_demo_seed

        retention_demo_seed()  # exit reasons and retention offers

        from retention.seed_renewal_offers import seed_renewal_offers

        seed_renewal_offers(now=now, password=DEMO_PASSWORD)  # Nordwind (nora): the annual offer card near renewal
        token, _ = Token.objects.get_or_create(user=User.objects.get(username="alice"))
        self.stdout.write(self.style.SUCCESS("Demo data ready."))
        self.stdout.write(f"  Staff (admin):      admin / {ADMIN_PASSWORD}; support: sue, sales: sam, sales manager: maria, "
                          f"finance: fiona / {DEMO_PASSWORD}")
        self.stdout.write(f"  Approvers:          maria (sales manager), fiona (finance); password {DEMO_PASSWORD}")
        self.stdout.write(f"  Enterprise:         uma (owner, Umbrella AG, contract {CONTRACT['number']}: budget cap "
                          f"€1,000 per change, negotiated prices, a draft amendment to submit)")
        self.stdout.write(f"  Customer logins:    alice (owner, Acme GmbH, EUR), bob (billing admin), carol (member),"
                          f"\n                      dave (Globex, USD, card asks for authentication), "
                          f"erin (Initech, GBP, card declines: past due), kenji (Tanaka KK, JPY), "
                          f"fleur (Société Exemple, EUR, reverse charge),\n                      nora (Nordwind, "
                          f"EUR, German, renews within a week: the annual renewal offer); password {DEMO_PASSWORD}")
        self.stdout.write(f"  API token (alice):  {token.key}")
        from retention.seed_winback import seed_winback  # win-back campaign and a customer who left

        self.stdout.write(seed_winback(now=now, password=DEMO_PASSWORD))

    def _product(self, code, name, description, order, plans, features) -> Product:
        product, _ = Product.objects.update_or_create(code=code, defaults={
            "name": name, "description": description, "sort_order": order})
        for plan_code, (plan_name, rank, eur, pricing, min_q, max_q, values) in plans.items():
            plan, _ = Plan.objects.update_or_create(product=product, code=plan_code,
                                                    defaults={"name": plan_name, "rank": rank})
            mode, bands = TIERS.get((code, plan_code), ("none", []))
            for currency in CURRENCIES:
                for interval in INTERVALS:
                    price, _ = Price.objects.update_or_create(
                        plan=plan, currency=currency, interval=interval, is_active=True,
                        defaults={"unit_amount": _price(eur, currency, interval), "pricing": pricing,
                                  "min_quantity": min_q, "max_quantity": max_q, "tiers_mode": mode})
                    self._tiers(price, [PriceTier(price=price, up_to=up_to, unit_amount=_price(band, currency, interval))
                                        for up_to, band in bands])
            for feature_code, feature in features.items():
                value = values.get(feature_code, False)
                enabled = value is not False
                PlanFeature.objects.update_or_create(plan=plan, feature=feature, defaults={
                    "enabled": enabled,
                    "limit_value": value if feature.kind == "limit" and enabled and value is not True else None})
        return product

    def _tiers(self, price: Price, tiers: list[PriceTier]) -> None:
        """The price's bands as given; left alone when they already are (so a price in use keeps its rows)."""
        price.clean_tiers(tiers)
        have = [(tier.up_to, tier.unit_amount, tier.flat_amount) for tier in price.tiers.all()]
        if have != [(tier.up_to, tier.unit_amount, tier.flat_amount) for tier in tiers]:
            price.tiers.all().delete()
            PriceTier.objects.bulk_create(tiers)

    def _subscription(self, customer, product, plan_code, interval, quantity, now) -> None:
        price = Price.objects.get(plan__product=product, plan__code=plan_code, currency=customer.currency,
                                  interval=interval, is_active=True)
        tz = ZoneInfo(customer.timezone)
        local = now.astimezone(tz)
        start = datetime(local.year, local.month, 1, tzinfo=tz)
        end = proration.add_interval(start, interval, tz)
        subscription = Subscription.objects.filter(customer=customer, product=product).exclude(
            status=Subscription.Status.CANCELLED).first()
        if subscription is None:
            if customer.name in RENEWAL_DUE:  # last month's period has ended: the renewal step runs on it
                end = start
                start = datetime(end.year - (end.month == 1), (end.month - 2) % 12 + 1, 1, tzinfo=tz)
            Subscription.objects.create(customer=customer, product=product, price=price, quantity=quantity,
                                        seats_in_use=min(quantity, 2), current_period_start=start,
                                        current_period_end=end)

    def _approvals(self, finance, now) -> None:
        """Approval policies (their roles are the staff groups above) and Umbrella's contract with a draft amendment."""
        from billing.models import Amendment, ApprovalPolicy, ApprovalPolicyStep, Contract, ContractPrice
        from billing.services.contracts import amendment_save_draft, contract_term_for

        sales_managers = Group.objects.get(name="Sales managers")  # its permissions and maria: STAFF_GROUPS, DEMO_STAFF
        groups = {"Sales managers": sales_managers, "Finance": finance}
        for position, name, applies_to, trigger, threshold, currency, roles in APPROVAL_POLICIES:
            policy, _ = ApprovalPolicy.objects.update_or_create(position=position, defaults={
                "name": name, "applies_to": applies_to, "trigger": trigger, "currency": currency, "in_order": True,
                "threshold": Decimal(threshold) if threshold is not None else None})
            if [step.group.name for step in policy.steps.order_by("position")] != roles:
                policy.steps.all().delete()
                ApprovalPolicyStep.objects.bulk_create([
                    ApprovalPolicyStep(policy=policy, position=index, group=groups[role])
                    for index, role in enumerate(roles, start=1)])
        subscription = Subscription.objects.select_related("customer", "price").filter(
            customer__name=CONTRACT["customer"]).exclude(status=Subscription.Status.CANCELLED).first()
        if subscription is None or Contract.objects.filter(number=CONTRACT["number"]).exists():
            return
        tz = ZoneInfo(subscription.customer.timezone)
        start, end = contract_term_for(subscription=subscription,
                                       start_on=subscription.current_period_start.astimezone(tz).date(),
                                       periods=CONTRACT["periods"])
        contract = Contract.objects.create(
            customer=subscription.customer, subscription=subscription, number=CONTRACT["number"], term_start=start,
            term_end=end, billing_interval=subscription.price.interval, currency=subscription.price.currency,
            committed_seats=CONTRACT["committed_seats"], minimum_spend=Decimal(CONTRACT["minimum_spend"]),
            purchase_order=CONTRACT["purchase_order"], budget_cap=Decimal(CONTRACT["budget_cap"]), auto_renew=True,
            created_at=start)
        for plan_code, amount in CONTRACT["prices"].items():
            price = Price.objects.get(plan__product=subscription.product, plan__code=plan_code,
                                      currency=contract.currency, interval=contract.billing_interval, is_active=True)
            ContractPrice.objects.create(contract=contract, price=price, unit_amount=Decimal(amount))
        amendment_save_draft(amendment=Amendment(
            contract=contract, kind=Amendment.Kind.CHANGE_PRICE, unit_amount=Decimal("42.00"),
            effective_on=now.astimezone(tz).date(),
            note="Loyalty discount agreed with Umbrella's procurement (demo: submit it, then approve as maria and "
                 "fiona)."), actor=get_user_model().objects.get(username="admin"), now=now)
