"""Reading submitted forms into plain values: text fields and uploaded files."""

from __future__ import annotations

from starlette.datastructures import FormData, UploadFile

from mailgate.services.tickets import NewAttachment

FIELD_MAX = 200_000  # longer text is cut; the service then reports it as too long


def text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value[:FIELD_MAX] if isinstance(value, str) else ""


async def uploads(form: FormData, name: str = "attachments") -> list[NewAttachment]:
    """The files of a file field; the empty part a browser sends for "no file" is skipped."""
    found = []
    for item in form.getlist(name):
        if not isinstance(item, UploadFile):
            continue
        payload = await item.read()
        if not item.filename and not payload:
            continue
        content_type = (item.content_type or "application/octet-stream").split(";")[0].strip()
        found.append(NewAttachment(item.filename or "attachment", content_type, payload))
    return found
