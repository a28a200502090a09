"""A bulk plan change in the back office, in a real browser: a staff member uploads a CSV, checks the preview and its
total, confirms, watches the progress reach 100 % and downloads every row's result. axe-core on the job page;
screenshots of the upload page and the job page (preview and done) in test-artifacts/screenshots/."""

from __future__ import annotations

import csv
import io

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone
from playwright.sync_api import expect

from billing.models import BulkJob, LocalPayment, PlanChange, Subscription
from billing.money import format_amount
from billing.services.quotes import quote_price
from billing.tests.factories import CustomerFactory, PaymentMethodFactory, UserFactory, live_subscription_setup
from portal.tests.browser.conftest import AXE, DESKTOP, SCREENSHOTS

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "pw-for-tests"  # UserFactory's


def axe_violations(page) -> list[dict]:
    """The page's axe-core violations, each {id, impact, help, targets} (as portal/tests/browser/conftest.py)."""
    if not AXE.exists():
        pytest.skip(f"needs axe-core at {AXE}: run `npm ci --no-audit --no-fund` at the project root (make test does)")
    page.add_script_tag(path=str(AXE))
    return page.evaluate("""async () => {
        const result = await axe.run(document, {resultTypes: ["violations"]});
        return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                            targets: v.nodes.map(n => n.target.join(" "))}));
    }""")


# Django admin's stock stylesheet told its breadcrumb links from the text around them by colour alone;
# templates/admin/base_site.html underlines them, and these checks allow no exception.


def serious_violations(page, name: str, *, allow: tuple[str, str] | None = None) -> list[str]:
    """The page's serious or critical axe-core violations, described (minor ones are printed)."""
    found = []
    for v in axe_violations(page):
        targets = [t for t in v["targets"] if allow is None or v["id"] != allow[0] or not t.startswith(allow[1])]
        if targets:
            line = f"{name}: {v['id']} ({v['impact']}) {v['help']} at {', '.join(targets[:5])}"
            if v["impact"] in ("serious", "critical"):
                found.append(line)
            else:
                print(f"axe, minor or moderate: {line}")
    return found


def sign_in_to_admin(page, live_server, user) -> None:
    """Through the admin's own login form, as a person would."""
    page.goto(live_server.url + "/admin/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    with page.expect_navigation():
        page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Catalog, customers and plan changes")).to_be_visible()


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}-desktop.png"), full_page=True)


def three_customers_on_basic():
    s = live_subscription_setup()
    subscriptions = [s.subscription]
    for name in ("Beta Logistics GmbH", "Gamma Foods AG"):
        customer = CustomerFactory(name=name)
        PaymentMethodFactory(customer=customer, reference="pm_card_visa")
        subscriptions.append(Subscription.objects.create(
            customer=customer, product=s.product, price=s.basic_month, quantity=5,
            current_period_start=s.subscription.current_period_start,
            current_period_end=s.subscription.current_period_end))
    return s, subscriptions


def bulk_staff():
    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(
        content_type__app_label="billing", codename__in=["view_bulkjob", "add_bulkjob", "run_bulk_job"]))
    return staff


def test_staff_upload_a_csv_check_the_total_confirm_and_see_every_result(live_server, browser):
    s, subscriptions = three_customers_on_basic()
    staff = bulk_staff()
    # What each upgrade costs today, from the pricing service itself: Basic × 5 → Pro × 5, the same for all three.
    amount = quote_price(subscription=s.subscription, to_price=s.pro_month, quantity=5, now=timezone.now()).amount_due
    total = f"€{format_amount(3 * amount, 'EUR')}"
    data = ("customer,product,plan,interval,seats,effective_date\n"
            f"{s.customer.pk},analytics,pro,month,,\n"
            "Beta Logistics GmbH,analytics,pro,month,5,\n"
            f"{subscriptions[2].customer.pk},analytics,pro,month,,\n"
            "Nobody Ltd,analytics,pro,month,5,\n").encode()

    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    context.set_default_timeout(10_000)
    # Confirming runs the whole job inside the request (Celery is eager in tests): payments, invoices and their PDFs.
    context.set_default_navigation_timeout(60_000)
    page = context.new_page()
    try:
        # Signed in, then to the upload page the way a person gets there.
        sign_in_to_admin(page, live_server, staff)
        page.get_by_role("link", name="Bulk jobs").first.click()
        page.get_by_role("link", name="Add bulk job").click()
        expect(page.get_by_role("heading", name="Bulk change from a CSV")).to_be_visible()
        assert page.url == f"{live_server.url}/admin/billing/bulkjob/upload/"
        page.get_by_label("Name").fill("Q3 repricing")
        page.get_by_label("Reason").fill("Basic is retired; Pro at the Basic price until renewal")
        page.get_by_label("File").set_input_files(files=[{"name": "q3.csv", "mimeType": "text/csv", "buffer": data}])
        screenshot(page, "bulk-upload")
        with page.expect_navigation():
            page.get_by_role("button", name="Upload and preview").click()

        # The preview: the total due now, the invalid row and why, and nothing changed yet.
        job = BulkJob.objects.get()
        assert page.url == f"{live_server.url}/admin/billing/bulkjob/{job.pk}/"
        content = page.locator("#content")
        expect(content).to_contain_text(f"Amount due now, if every row applies as previewed: {total}.")
        expect(content).to_contain_text("3 row(s) will run; 1 invalid row(s) will be skipped")
        expect(page.get_by_role("row").filter(has_text="Nobody Ltd")).to_contain_text("Invalid row")
        expect(page.get_by_role("row").filter(has_text="Beta Logistics GmbH")).to_contain_text("In a bulk job's preview")
        assert not PlanChange.objects.exists()
        assert not serious_violations(page, "preview")
        screenshot(page, "bulk-job-preview")

        # Confirmed: the workers (eager here) apply the rows; the progress reaches 100 % and stops polling.
        with page.expect_navigation():
            page.get_by_role("button", name="Confirm and run 3 change(s)").click()
        expect(page.get_by_text("Confirmed: the workers are applying the changes.")).to_be_visible()
        progress = page.locator("#bulk-progress")
        expect(progress).to_contain_text("Done · 4 of 4 rows finished (100 %)")
        expect(progress).to_contain_text("Applied 3 · scheduled for the period end 0 · refused 0 · failed 0 · invalid 1")
        expect(progress.get_by_role("progressbar", name="Rows finished")).to_have_attribute("value", "100")
        expect(progress).not_to_have_attribute("hx-trigger", "every 2s")
        assert not serious_violations(page, "done")
        screenshot(page, "bulk-job-done")

        # Every row's result, from the link on the page.
        with page.expect_download() as download:
            page.get_by_role("link", name="Download every row's result (CSV)").click()
        assert download.value.suggested_filename == f"bulk-job-{job.pk}-results.csv"
        results = list(csv.DictReader(io.StringIO(download.value.path().read_text(encoding="utf-8"))))
    finally:
        context.close()

    assert [(r["line"], r["customer"], r["status"]) for r in results] == [
        ("2", s.customer.name, "Applied"), ("3", "Beta Logistics GmbH", "Applied"),
        ("4", subscriptions[2].customer.name, "Applied"), ("5", "Nobody Ltd", "Invalid row")]
    assert results[3]["result_code"] == "unknown_customer"
    for subscription in subscriptions:
        subscription.refresh_from_db()
        assert (subscription.price_id, subscription.version) == (s.pro_month.pk, 2)
    assert LocalPayment.objects.filter(status="succeeded").count() == 3
    job.refresh_from_db()
    assert (job.status, job.confirmed_by) == ("done", staff)


def test_the_bulk_job_page_has_no_serious_accessibility_violations(live_server, page):
    from billing.services.bulk_jobs import bulk_job_from_selection

    s, subscriptions = three_customers_on_basic()
    staff = bulk_staff()
    job = bulk_job_from_selection(name="Q3 repricing", reason="Basic is retired", customers=[x.customer for x in subscriptions],
                                  product="analytics", plan="pro", interval="month", seats=None, effective="",
                                  actor=staff, now=timezone.now())
    sign_in_to_admin(page, live_server, staff)
    page.goto(f"{live_server.url}/admin/billing/bulkjob/{job.pk}/")
    expect(page.get_by_role("heading", name="Preview")).to_be_visible()
    found = serious_violations(page, "job")
    assert not found, "\n".join(found)


def test_an_applied_rows_result_states_the_amount_in_the_currencys_minor_unit(live_server, page):
    from billing.services.bulk_jobs import bulk_job_confirm, bulk_job_from_selection

    s, subscriptions = three_customers_on_basic()
    staff = bulk_staff()
    now = timezone.now()
    job = bulk_job_from_selection(name="Q3 repricing", reason="Basic is retired", customers=[s.customer],
                                  product="analytics", plan="pro", interval="month", seats=None, effective="",
                                  actor=staff, now=now)
    bulk_job_confirm(job=job, actor=staff, now=now)  # eager: applied before this returns
    change = PlanChange.objects.get()
    assert change.status == "applied"
    sign_in_to_admin(page, live_server, staff)
    page.goto(f"{live_server.url}/admin/billing/bulkjob/{job.pk}/")
    result = page.get_by_role("row").filter(has_text=s.customer.name).get_by_role("cell").last.inner_text()
    assert result.startswith(f"Applied as plan change {change.pk}")
    assert f"{format_amount(change.amount_due, 'EUR')} EUR" in result, result
