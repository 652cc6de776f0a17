"""The HTTP edge: Starlette routes over KeyService and ClientRegistry."""

from .app import create_app

__all__ = ["create_app"]
