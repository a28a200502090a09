"""Domain errors with a stable code (for API clients) and a human detail (for people)."""

from __future__ import annotations

from typing import Any


class BillingError(Exception):
    """A refusal or failure the caller can show as it is. `status` is the HTTP status the API uses."""

    status = 422

    def __init__(self, code: str, detail: str, *, status: int | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        if status is not None:
            self.status = status
        self.extra = extra

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "detail": self.detail, **self.extra}


class ChangeRefused(BillingError):
    """The requested change is not eligible; nothing was recorded."""

    status = 422


class ChangeConflict(BillingError):
    """The state moved on (expired quote, changed subscription, change in progress)."""

    status = 409


class ApprovalRefused(BillingError):
    """This person may not decide this approval step (separation of duties, role, order); nothing was recorded."""

    status = 403
