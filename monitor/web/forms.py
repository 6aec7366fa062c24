"""Form bodies read into memory only, never spooled to a temporary file.

Starlette's own multipart parser keeps each upload in a ``SpooledTemporaryFile`` that moves to
disk past 1 MB: a reference photo would land in /tmp. Here the whole body is read (at most
``max_bytes``, else :class:`FormTooLarge`) and parsed with python-multipart's callback parser
into ``bytes`` objects; uploads are hashed and dropped by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from monitor.errors import MonitorError

__all__ = ["Form", "FormError", "FormTooLarge", "Upload", "read_form"]

MAX_FILES = 100
MAX_FIELDS = 100


class FormError(MonitorError):
    """A form body that cannot be read."""


class FormTooLarge(FormError):
    pass


@dataclass
class Upload:
    filename: str
    data: bytes
    field: str = ""  # the form field it came in


@dataclass
class Form:
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: list[Upload] = field(default_factory=list)

    def get(self, name: str, default: str = "") -> str:
        values = self.fields.get(name)
        return values[0] if values else default

    def getlist(self, name: str) -> list[str]:
        return list(self.fields.get(name, []))


async def _body(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise FormTooLarge(f"the upload is larger than {max_bytes // 1_000_000} MB")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise FormTooLarge(f"the upload is larger than {max_bytes // 1_000_000} MB")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(request: Request, max_bytes: int) -> Form:
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    body = await _body(request, max_bytes)
    form = Form()
    if content_type == b"application/x-www-form-urlencoded" or not body:
        pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        if len(pairs) > MAX_FIELDS:
            raise FormError("too many form fields")
        for k, v in pairs:
            form.fields.setdefault(k, []).append(v)
        return form
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise FormError("unexpected form encoding")
    return _multipart(body, params[b"boundary"], form)


def _multipart(body: bytes, boundary: bytes, form: Form) -> Form:
    state: dict[str, object] = {}
    header_field = bytearray()
    header_value = bytearray()
    headers: dict[bytes, bytes] = {}
    data = bytearray()

    def on_part_begin() -> None:
        headers.clear()
        data.clear()

    def on_header_field(b: bytes, start: int, end: int) -> None:
        header_field.extend(b[start:end])

    def on_header_value(b: bytes, start: int, end: int) -> None:
        header_value.extend(b[start:end])

    def on_header_end() -> None:
        headers[bytes(header_field).lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_part_data(b: bytes, start: int, end: int) -> None:
        data.extend(b[start:end])

    def on_part_end() -> None:
        _disp, opts = parse_options_header(headers.get(b"content-disposition", b""))
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in opts:
            if len(form.files) >= MAX_FILES:
                state["error"] = "too many files in one upload"
                return
            filename = opts[b"filename"].decode("utf-8", "replace")
            if data or filename:
                form.files.append(Upload(filename, bytes(data), name))
        else:
            if sum(len(v) for v in form.fields.values()) >= MAX_FIELDS:
                state["error"] = "too many form fields"
                return
            form.fields.setdefault(name, []).append(bytes(data).decode("utf-8", "replace"))
        data.clear()

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except Exception as exc:  # python-multipart raises its own errors for broken bodies
        raise FormError(f"the form could not be read: {exc}") from exc
    if "error" in state:
        raise FormError(str(state["error"]))
    return form
