from __future__ import annotations

from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache
from django.utils.translation import gettext_lazy as _

INTERVALS = [("month", _("Monthly")), ("quarter", _("Quarterly")), ("year", _("Annual"))]
LOGIN_ATTEMPTS = 5
LOGIN_WINDOW_SECONDS = 15 * 60


class PlanChoiceForm(forms.Form):
    plan = forms.IntegerField(min_value=1, widget=forms.HiddenInput)
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


class RateLimitedLoginForm(AuthenticationForm):
    """Django's login form, refusing a username after too many failed attempts from one address."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": _("That username and password do not match. Check both and try again."),
        "too_many": _("Too many failed sign-in attempts. Wait 15 minutes, then try again."),
    }

    def _key(self) -> str:
        address = self.request.META.get("REMOTE_ADDR", "") if self.request else ""
        return f"login-failures:{(self.data.get('username') or '').lower()}:{address}"

    def clean(self):
        key = self._key()
        if (cache.get(key) or 0) >= LOGIN_ATTEMPTS:
            raise forms.ValidationError(self.error_messages["too_many"], code="too_many")
        try:
            return super().clean()
        except forms.ValidationError:
            cache.add(key, 0, LOGIN_WINDOW_SECONDS)
            try:
                cache.incr(key)
            except ValueError:
                cache.set(key, 1, LOGIN_WINDOW_SECONDS)
            raise
