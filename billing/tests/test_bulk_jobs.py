"""Bulk jobs and staff changes at a date: preview, confirm, chunks, results, date order, exactly once."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from billing.errors import BillingError
from billing.models import AuditEvent, BulkJob, Invoice, LocalPayment, PlanChange, ScheduledChange, Subscription
from billing.services.bulk_jobs import bulk_job_confirm, bulk_job_from_csv, bulk_job_progress, bulk_job_results_csv
from billing.services.renewals import plan_changes_apply_due
from billing.services.scheduled_changes import scheduled_change_apply, scheduled_change_create, scheduled_changes_run
from billing.tests.factories import CustomerFactory, PaymentMethodFactory, UserFactory, live_subscription_setup

pytestmark = pytest.mark.django_db


def another(s, *, card="pm_card_visa", name=None, seats=5):
    customer = CustomerFactory(**({"name": name} if name else {}))
    PaymentMethodFactory(customer=customer, reference=card)
    return Subscription.objects.create(customer=customer, product=s.product, price=s.basic_month, quantity=seats,
                                       current_period_start=s.subscription.current_period_start,
                                       current_period_end=s.subscription.current_period_end)


def csv_of(*rows: str) -> bytes:
    return ("customer,product,plan,interval,seats,effective_date\n" + "\n".join(rows) + "\n").encode()


@pytest.fixture
def staff():
    return UserFactory(is_staff=True)


def test_a_csv_job_previews_every_row_then_runs_them_and_reports_each_result(staff, django_capture_on_commit_callbacks):
    s = live_subscription_setup()
    declining = another(s, card="pm_card_chargeDeclined", name="Declining Ltd")
    needs_3ds = another(s, card="pm_card_authenticationRequired", name="Careful AG")
    now = timezone.now()
    data = csv_of(
        f"{s.customer.pk},analytics,pro,month,,",                     # upgrade now: Basic × 5 → Pro × 5
        f"{declining.customer.name},analytics,pro,month,5,",          # the card declines
        f"{needs_3ds.customer.pk},analytics,pro,month,5,",            # needs authentication: nobody to ask
        "Nobody GmbH,analytics,pro,month,5,",                         # unknown customer
        f"{s.customer.pk},analytics,platinum,month,5,",              # unknown plan
        f"{s.customer.pk},analytics,pro,month,five,",                # bad seats
        f"{s.customer.pk},analytics,pro,month,5,tomorrow",          # bad date
    )
    job = bulk_job_from_csv(name="Q3", reason="Repricing", data=data, actor=staff, now=now)
    rows = {row.line_number: row for row in job.rows.all()}
    assert [rows[n].status for n in range(2, 9)] == ["preview", "preview", "preview", "invalid", "invalid", "invalid",
                                                     "invalid"]
    assert rows[5].result_code == "unknown_customer" and "Nobody GmbH" in rows[5].message
    assert rows[6].result_code == "unknown_price" and rows[7].result_code == "bad_seats"
    assert rows[8].result_code == "bad_effective_date"
    each = rows[2].preview_amount_due
    assert each > 0 and rows[3].preview_amount_due == each == rows[4].preview_amount_due
    assert job.preview_totals == {"EUR": f"{3 * each:.2f}"}
    assert not PlanChange.objects.exists()  # a preview changes nothing
    with django_capture_on_commit_callbacks(execute=True):
        bulk_job_confirm(job=job, actor=staff, now=now)
    rows = {row.line_number: row for row in job.rows.all()}
    assert (rows[2].status, rows[3].status, rows[4].status) == ("applied", "failed", "failed")
    assert rows[3].result_code == "card_declined"
    assert rows[4].result_code == "needs_authentication"
    assert PlanChange.objects.get(pk=rows[4].plan_change_id).status == "cancelled"
    assert Subscription.objects.get(pk=s.subscription.pk).price_id == s.pro_month.pk
    assert Subscription.objects.get(pk=declining.pk).price_id == s.basic_month.pk
    assert LocalPayment.objects.filter(status="succeeded").count() == 1
    assert Invoice.objects.filter(plan_change_id=rows[2].plan_change_id).count() == 1
    job.refresh_from_db()
    assert job.status == "done" and job.finished_at is not None
    progress = bulk_job_progress(job=job)
    assert (progress["total"], progress["finished"], progress["applied"], progress["failed"], progress["invalid"]) == (
        7, 7, 1, 2, 4)
    results = bulk_job_results_csv(job=job).splitlines()
    assert results[0].startswith("line,customer,")
    assert len(results) == 8 and "Applied" in results[1] and "Unknown" not in results[1]
    assert AuditEvent.objects.filter(action="scheduled_change.applied").count() == 1


def test_a_job_is_confirmed_once_and_a_chunk_delivered_twice_applies_each_change_once(
        staff, django_capture_on_commit_callbacks):
    s = live_subscription_setup()
    others = [another(s) for _ in range(3)]
    data = csv_of(*[f"{sub.customer.pk},analytics,pro,month,," for sub in [s.subscription, *others]])
    now = timezone.now()
    job = bulk_job_from_csv(name="Twice", reason="test", data=data, actor=staff, now=now)
    with django_capture_on_commit_callbacks(execute=False):
        bulk_job_confirm(job=job, actor=staff, now=now)
    with pytest.raises(BillingError) as info:
        bulk_job_confirm(job=job, actor=staff, now=now)
    assert info.value.code == "not_in_preview"
    ids = list(job.rows.values_list("pk", flat=True))
    assert scheduled_changes_run(ids=ids, now=now) == 4
    assert scheduled_changes_run(ids=ids, now=now) == 4  # again: all finished, nothing applied twice
    assert PlanChange.objects.filter(status="applied").count() == 4
    assert LocalPayment.objects.count() == 4


def test_staff_changes_at_dates_apply_in_date_order_when_due(staff):
    s = live_subscription_setup()
    now = timezone.now()
    later = scheduled_change_create(subscription=s.subscription, to_price=s.pro_month, quantity=8,
                                    effective_at=now + timedelta(days=2), actor=staff, reason="second", now=now)
    first = scheduled_change_create(subscription=s.subscription, to_price=s.pro_month, quantity=6,
                                    effective_at=now + timedelta(days=1), actor=staff, reason="first", now=now)
    assert plan_changes_apply_due(now=now + timedelta(hours=1)) == 0
    # The later one is not applied before the earlier one, even when asked first.
    assert scheduled_change_apply(scheduled_change_id=later.pk, now=now + timedelta(days=3)).status == "scheduled"
    plan_changes_apply_due(now=now + timedelta(days=3))
    first.refresh_from_db()
    later.refresh_from_db()
    assert (first.status, later.status) == ("applied", "applied")
    assert first.plan_change.to_quantity == 6 and later.plan_change.to_quantity == 8
    assert first.plan_change.applied_at < later.plan_change.applied_at or first.plan_change_id < later.plan_change_id
    assert Subscription.objects.get(pk=s.subscription.pk).quantity == 8


def test_a_staff_change_needs_a_reason_a_future_date_and_the_customers_currency(staff):
    s = live_subscription_setup()
    now = timezone.now()
    cases = [
        ({"reason": " "}, "reason_required"),
        ({"effective_at": now - timedelta(days=1)}, "effective_in_past"),
        ({"to_price": s.basic_month.__class__.objects.create(plan=s.pro, currency="USD", interval="month",
                                                             unit_amount=Decimal(1))}, "currency_mismatch"),
    ]
    for override, code in cases:
        args = {"subscription": s.subscription, "to_price": s.pro_month, "quantity": 5, "effective_at": now,
                "actor": staff, "reason": "ok", "now": now, **override}
        with pytest.raises(BillingError) as info:
            scheduled_change_create(**args)
        assert info.value.code == code
    assert not ScheduledChange.objects.exists()


def test_a_worker_killed_after_quoting_is_resumed_and_applies_once(staff):
    s = live_subscription_setup()
    now = timezone.now()
    row = scheduled_change_create(subscription=s.subscription, to_price=s.pro_month, quantity=5, effective_at=now,
                                  actor=staff, reason="resume", now=now)
    from billing.services.quotes import quote_create

    quote = quote_create(subscription=s.subscription, to_price=s.pro_month, quantity=5, now=now, actor=staff)
    ScheduledChange.objects.filter(pk=row.pk).update(status="processing", quote=quote, attempts=1)  # then the kill
    from billing.services.scheduled_changes import scheduled_changes_due

    assert list(scheduled_changes_due(now=now)) == [row]  # the sweep finds it again …
    assert scheduled_change_apply(scheduled_change_id=row.pk, now=now).status == "applied"  # … and resumes it
    assert scheduled_change_apply(scheduled_change_id=row.pk, now=now).status == "applied"
    assert PlanChange.objects.filter(quote=quote).count() == 1 and LocalPayment.objects.count() == 1


def test_refusals_are_results_not_errors(staff):
    s = live_subscription_setup()
    now = timezone.now()
    row = scheduled_change_create(subscription=s.subscription, to_price=s.business_month, quantity=1, effective_at=now,
                                  actor=staff, reason="too few seats", now=now)
    row = scheduled_change_apply(scheduled_change_id=row.pk, now=now)
    assert row.status == "refused" and row.result_code and row.message
    assert not PlanChange.objects.exists()


# --- admin -------------------------------------------------------------------------------------------


def grant(user, *codenames):
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="billing", codename__in=codenames))


def test_admin_upload_preview_confirm_progress_and_results(client, staff, django_capture_on_commit_callbacks):
    from django.core.files.uploadedfile import SimpleUploadedFile

    s = live_subscription_setup()
    grant(staff, "view_bulkjob", "add_bulkjob")
    client.force_login(staff)
    upload = SimpleUploadedFile("changes.csv", csv_of(f"{s.customer.pk},analytics,pro,month,,"), "text/csv")
    response = client.post("/admin/billing/bulkjob/upload/", {"name": "One", "reason": "test", "file": upload})
    job = BulkJob.objects.get()
    assert response.status_code == 302 and response["Location"].endswith(f"/admin/billing/bulkjob/{job.pk}/")
    page = client.get(f"/admin/billing/bulkjob/{job.pk}/").content.decode()
    assert "Amount due now" in page and job.preview_totals["EUR"] in page and "run bulk job" in page
    assert client.post(f"/admin/billing/bulkjob/{job.pk}/", {"confirm": "1"}).status_code == 403  # no permission
    grant(staff, "run_bulk_job")
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(f"/admin/billing/bulkjob/{job.pk}/", {"confirm": "1"}).status_code == 302
    progress = client.get(f"/admin/billing/bulkjob/{job.pk}/progress/").content.decode()
    assert "1 of 1 rows finished (100 %)" in progress and "Applied 1" in progress
    results = client.get(f"/admin/billing/bulkjob/{job.pk}/results.csv")
    assert results["Content-Type"].startswith("text/csv") and b"Applied" in results.content


def test_admin_upload_refuses_a_bad_file_with_the_reason(client, staff):
    grant(staff, "view_bulkjob", "add_bulkjob")
    client.force_login(staff)
    from django.core.files.uploadedfile import SimpleUploadedFile

    bad = SimpleUploadedFile("x.csv", b"name,plan\nx,y\n", "text/csv")
    page = client.post("/admin/billing/bulkjob/upload/", {"name": "x", "reason": "x", "file": bad}).content.decode()
    assert "needs a header row" in page and "missing: customer, product, interval, seats" in page
    assert not BulkJob.objects.exists()
    assert client.get("/admin/billing/bulkjob/upload/").status_code == 200
    outsider = UserFactory(is_staff=True)
    client.force_login(outsider)
    assert client.get("/admin/billing/bulkjob/upload/").status_code == 403


def test_admin_selection_action_makes_a_job(client, staff):
    s = live_subscription_setup()
    other = another(s)
    grant(staff, "view_customer", "view_bulkjob", "add_bulkjob")
    client.force_login(staff)
    form = client.post("/admin/billing/customer/", {"action": "bulk_change_customers",
                                                    "_selected_action": [s.customer.pk, other.customer.pk]})
    assert form.status_code == 200 and "Bulk change 2 customer(s)" in form.content.decode()
    response = client.post("/admin/billing/customer/", {
        "action": "bulk_change_customers", "_selected_action": [s.customer.pk, other.customer.pk], "apply": "1",
        "name": "Move", "reason": "test", "product": "analytics", "plan": "pro", "interval": "month", "seats": "7"})
    job = BulkJob.objects.get()
    assert response.status_code == 302
    assert sorted(job.rows.values_list("to_quantity", flat=True)) == [7, 7]
    assert set(job.rows.values_list("status", flat=True)) == {"preview"}
