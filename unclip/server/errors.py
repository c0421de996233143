"""The API's error shape, {"error": {"message", "type", "param", "code"}}, and the handlers that produce it.

Bad input is always 400 (or 401/404/413): the official client retries 408, 409, 429 and 5xx, so those
are kept for what a retry can fix — a full queue (429) and a request that ran out of time (504).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class APIError(Exception):
    """An error answered to the client; `param` names the offending request field."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def invalid(message: str, param: str | None, code: str) -> APIError:
    """A 400 invalid_request_error."""
    return APIError(400, message, param=param, code=code)


async def _api_error(request: Request, exc: APIError) -> JSONResponse:
    return exc.response()


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI's 422 becomes the API's 400; the last string in `loc` is the field.
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if not isinstance(p, int)]
    param = loc[-1] if loc and loc[-1] not in ("body", "query", "path") else None
    return invalid(f"{first.get('msg', 'Invalid request')} - '{param}'", param, "invalid_value").response()


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # Unknown routes and wrong methods get the same shape instead of Starlette's {"detail": ...}.
    if exc.status_code == 404:
        message = f"Invalid URL ({request.method} {request.url.path})"
    else:
        message = str(exc.detail)
    return APIError(exc.status_code, message, code=_HTTP_CODES.get(exc.status_code), headers=exc.headers).response()


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    return APIError(500, "The server had an error while processing your request.", type="server_error").response()


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
