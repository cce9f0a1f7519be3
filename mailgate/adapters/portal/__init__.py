"""The customer portal over HTTP (Starlette; `serve` runs it with uvicorn on its loop)."""

from mailgate.adapters.portal.asgi import create_app
from mailgate.adapters.portal.web import PortalSettings

__all__ = ["PortalSettings", "create_app"]
