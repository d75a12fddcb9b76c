"""`ApiError`: an error the embedded API server answers with a `kind: Status` body."""

from __future__ import annotations

_REASONS = {
    400: "BadRequest",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}


class ApiError(Exception):
    """An API failure; `status()` is the `Status` object Kubernetes would send."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        details: dict | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict:
        st = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            st["details"] = self.details
        return st


def not_found(gr: str, name: str, group: str, plural: str) -> ApiError:
    details = {"name": name, "kind": plural}
    if group:
        details["group"] = group
    return ApiError(404, f'{gr} "{name}" not found', "NotFound", details)


def already_exists(gr: str, name: str, group: str, plural: str) -> ApiError:
    details = {"name": name, "kind": plural}
    if group:
        details["group"] = group
    return ApiError(409, f'{gr} "{name}" already exists', "AlreadyExists", details)


def conflict(gr: str, name: str, group: str, plural: str, why: str) -> ApiError:
    details = {"name": name, "kind": plural}
    if group:
        details["group"] = group
    return ApiError(
        409, f'Operation cannot be fulfilled on {gr} "{name}": {why}', "Conflict", details
    )


def invalid(kind: str, name: str, group: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """422 Invalid; causes are (field, bad value, explanation)."""
    parts = []
    out_causes = []
    for field, value, why in causes:
        msg = f"Invalid value: {value!r}: {why}" if value is not None else why
        parts.append(f"{field}: {msg}")
        out_causes.append({"reason": "FieldValueInvalid", "message": msg, "field": field})
    details = {"name": name, "kind": kind, "causes": out_causes}
    if group:
        details["group"] = group
    msg = f'{kind}{"." + group if group else ""} "{name}" is invalid: ' + ", ".join(parts)
    if len(parts) > 1:
        msg = (
            f'{kind}{"." + group if group else ""} "{name}" is invalid: [' + ", ".join(parts) + "]"
        )
    return ApiError(422, msg, "Invalid", details)
