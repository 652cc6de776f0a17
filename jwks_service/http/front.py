"""The app as `serve`'s protocol (http/protocol) sees it: which JWKS endpoint it may answer for the app,
and on which port it must not (the admin listener, where http/routes.AdminSplit answers 404).

`front_jwks` is None when every request must go through the middleware chain: with the access log on
(it times and logs each request). Through any other server (a test client, h11) the JWKS takes the
chain as every request does: request ids (http/access), then the fast routes (http/routes).
"""

from __future__ import annotations

from starlette.applications import Starlette

from .wellknown import JwksEndpoint

JWKS_PATH = "/.well-known/jwks.json"


class ServiceApp(Starlette):
    front_jwks: JwksEndpoint | None = None
    admin_port: int | None = None
