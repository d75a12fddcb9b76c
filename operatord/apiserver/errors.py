"""`ApiError`: an error the embedded API server answers with a `kind: Status` body."""

from __future__ import annotations

import json

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
        """The `Status` body, its fields in the order the real server writes them."""
        st: dict = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            st["details"] = self.details
        st["code"] = self.code
        return st


def _details(name: str, group: str, plural: str) -> dict:
    details = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = plural
    return details


def not_found(gr: str, name: str, group: str, plural: str) -> ApiError:
    details = _details(name, group, plural)
    return ApiError(404, f'{gr} "{name}" not found', "NotFound", details)


def already_exists(gr: str, name: str, group: str, plural: str) -> ApiError:
    details = _details(name, group, plural)
    return ApiError(409, f'{gr} "{name}" already exists', "AlreadyExists", details)


def conflict(gr: str, name: str, group: str, plural: str, why: str) -> ApiError:
    details = _details(name, group, plural)
    return ApiError(
        409, f'Operation cannot be fulfilled on {gr} "{name}": {why}', "Conflict", details
    )


def go_value(value: object) -> str:
    """A value as Kubernetes field errors print it: strings in double quotes, JSON otherwise."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


# A field error: (reason, field path, message without the path), as in the `causes` of a 422.
FieldError = tuple[str, str, str]


def field_invalid(field: str, value: object, detail: str) -> FieldError:
    return ("FieldValueInvalid", field, f"Invalid value: {go_value(value)}: {detail}")


def field_required(field: str, detail: str = "") -> FieldError:
    return ("FieldValueRequired", field, "Required value" + (f": {detail}" if detail else ""))


def field_not_supported(field: str, value: object, supported: list) -> FieldError:
    choices = ", ".join(go_value(v) for v in supported)
    return (
        "FieldValueNotSupported",
        field,
        f"Unsupported value: {go_value(value)}: supported values: {choices}",
    )


def field_too_long(field: str, limit: int) -> FieldError:
    return ("FieldValueTooLong", field, f"Too long: may not be longer than {limit}")


def field_too_many(field: str, actual: int, limit: int) -> FieldError:
    return ("FieldValueTooMany", field, f"Too many: {actual}: must have at most {limit} items")


def field_forbidden(field: str, detail: str) -> FieldError:
    return ("FieldValueForbidden", field, f"Forbidden: {detail}")


def invalid(kind: str, name: str, group: str, causes: list[FieldError]) -> ApiError:
    """422 Invalid, shaped like the real server's: `<Kind>[.<group>] "<name>" is invalid: ` and
    the field errors (in brackets when more than one), one `cause` per field error."""
    parts = [f"{field}: {msg}" for _, field, msg in causes]
    out_causes = [
        {"reason": reason, "message": msg, "field": field} for reason, field, msg in causes
    ]
    details: dict = {"name": name} if name else {}  # the real server omits an empty name
    if group:
        details["group"] = group
    details["kind"] = kind
    details["causes"] = out_causes
    head = f'{kind}{"." + group if group else ""} "{name}" is invalid: '
    msg = head + (parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]")
    return ApiError(422, msg, "Invalid", details)
