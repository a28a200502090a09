from __future__ import annotations

import unicodedata

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache
from django.utils.translation import gettext_lazy as _

INTERVALS = [("month", _("Monthly")), ("quarter", _("Quarterly")), ("year", _("Annual"))]
LOGIN_ATTEMPTS = 5
LOGIN_WINDOW_SECONDS = 15 * 60


MAX_ID = 2**63 - 1


class PlanChoiceForm(forms.Form):
    plan = forms.IntegerField(min_value=1, max_value=MAX_ID, widget=forms.HiddenInput)
    interval = forms.ChoiceField(choices=INTERVALS)
    seats = forms.IntegerField(label=_("Seats"), min_value=1, max_value=1_000_000,
                               error_messages={"min_value": _("Choose at least one seat."),
                                               "max_value": _("That is more seats than any plan offers."),
                                               "invalid": _("Enter the number of seats as a whole number.")})


class SeatsForm(forms.Form):
    interval = forms.ChoiceField(choices=INTERVALS, required=False)
    seats = forms.IntegerField(min_value=1, max_value=1_000_000, required=False,
                               error_messages={"min_value": _("Choose at least one seat."),
                                               "max_value": _("That is more seats than any plan offers."),
                                               "invalid": _("Enter the number of seats as a whole number.")})


class ConfirmForm(forms.Form):
    token = forms.CharField(max_length=64, widget=forms.HiddenInput)


ADDRESS_ATTEMPTS = 30  # failed sign-ins from one address across all usernames, per window


def client_address(request) -> str:
    """The client's address: REMOTE_ADDR, or behind our TLS proxy the address it appended last."""
    if request is None:
        return ""
    if settings.SECURE_PROXY_SSL_HEADER and request.META.get("HTTP_X_FORWARDED_FOR"):
        return request.META["HTTP_X_FORWARDED_FOR"].split(",")[-1].strip()
    return request.META.get("REMOTE_ADDR", "")


def _count_attempt(key: str) -> int:
    """Count this attempt before checking the password, so parallel guesses are counted too."""
    cache.add(key, 0, LOGIN_WINDOW_SECONDS)
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, LOGIN_WINDOW_SECONDS)
        return 1


class RateLimitMixin:
    """At most 5 sign-in attempts per username and address, and 30 per address, every 15 minutes.

    The username is normalised as authentication normalises it (whitespace, Unicode NFKC, case), so
    " Erin " and "ｅｒｉｎ" share one allowance. A successful sign-in clears the username's count.
    """

    def _keys(self) -> tuple[str, str]:
        username = unicodedata.normalize("NFKC", (self.data.get("username") or "").strip()).casefold()
        address = client_address(self.request)
        return f"login:{username}:{address}", f"login-address:{address}"

    def clean(self):
        user_key, address_key = self._keys()
        if _count_attempt(user_key) > LOGIN_ATTEMPTS or _count_attempt(address_key) > ADDRESS_ATTEMPTS:
            raise forms.ValidationError(self.error_messages["too_many"], code="too_many")
        cleaned = super().clean()
        cache.delete(user_key)
        return cleaned


class RateLimitedLoginForm(RateLimitMixin, AuthenticationForm):
    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": _("That username and password do not match. Check both and try again."),
        "too_many": _("Too many failed sign-in attempts. Wait 15 minutes, then try again."),
    }


class RateLimitedAdminLoginForm(RateLimitMixin, AdminAuthenticationForm):
    error_messages = {**AdminAuthenticationForm.error_messages, "too_many": RateLimitedLoginForm.error_messages["too_many"]}
