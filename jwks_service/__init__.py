"""jwks-service: signs JWTs, publishes a rolling JWKS, issues OAuth2 client_credentials tokens."""

__version__ = "0.1.0"

__all__ = ["__version__"]
