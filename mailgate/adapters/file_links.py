"""GET /files/{token}: a file from a signed link in an agent's notification (see
services/file_links.py). No session needed: the link is the credential, as for activation."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

from mailgate import logs
from mailgate.core.tokens import LinkTokens
from mailgate.services.file_links import file_for_token
from mailgate.store.blobs import BlobStore
from mailgate.store.db import Database


def file_link_routes(db: Database, blobs: BlobStore, links: LinkTokens) -> list[Route]:
    async def download(request: Request) -> Response:
        token = request.path_params["token"]

        def find() -> tuple[str, str] | None:
            with db.read() as session:
                row = file_for_token(session, links, token)
                return (row.sha256, row.filename) if row is not None else None

        found = await run_in_threadpool(find)
        path = blobs.path(found[0]) if found else None
        if found is None or path is None or not path.is_file():
            logs.info("files.link_refused")
            return PlainTextResponse("Link invalid or expired / Lien invalide ou expiré", 404)
        response = FileResponse(
            path,
            media_type="application/octet-stream",  # never rendered in our origin
            filename=found[1],
            content_disposition_type="attachment",
        )
        response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    return [Route("/files/{token}", download, methods=["GET"])]
