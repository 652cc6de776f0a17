"""Logging in to Vault / OpenBao, and keeping the service's token alive.

Credentials, first match wins:

- AppRole: ``vault.role_id`` (or VAULT_ROLE_ID) with the secret_id in ``vault.secret_id_file`` (re-read
  at every login, so it can be replaced) or VAULT_SECRET_ID; ``POST auth/<vault.auth_mount>/login``.
- A token: ``vault.token_file`` (re-read at every renewal round, so an agent such as Vault Agent may
  replace it), else VAULT_TOKEN.

`VaultAuth.login` authenticates at start and looks the token up (``auth/token/lookup-self``) to learn
its TTL. `VaultAuth.start` runs a daemon thread that renews the token (``auth/token/renew-self``) at
about 2/3 of its TTL. With AppRole the thread logs in again when Vault refuses a renewal or a renewal
comes back shorter than the token's TTL (its max TTL is near: Vault cannot extend it further). A token
that never expires (a root token) needs no thread.

Missing or refused credentials at start are a `ConfigError`. Vault unreachable or sealed at start is
an `UnavailableError` with ``strict`` (the caller cannot go on without Vault: a wrapped KEK);
otherwise a warning, and the thread keeps trying, so Vault-backed keysets recover by themselves (they
answer 503 meanwhile). Later problems are logged. Neither the token nor the secret_id is ever logged.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from .config import VaultSettings
from .errors import ConfigError, KeyValidationError, UnavailableError
from .vaultapi import VaultClient, VaultPermissionError, VaultRequest

log = logging.getLogger(__name__)

VAULT_TIMEOUT_SECONDS = 5.0  # a token request should fail fast with 503 rather than hang
RENEW_FRACTION = 2 / 3  # renew when a third of the TTL is left
MIN_DELAY = 0.5  # seconds between two rounds, at least
MAX_RETRY = 5.0  # Vault unreachable or sealed: try again at most this long after
REFUSED_RETRY = 30.0  # credentials refused: a human (or an agent rewriting a file) must act first
FILE_CHECK = 5.0  # a token that can no longer be renewed: how often vault.token_file is re-read


def _seconds(value: float) -> str:
    return f"{value:.0f}s"


class VaultAuth:
    """An authenticated Vault client (`client`, shared by every Vault user of one runtime) and the
    thread that keeps its token alive."""

    def __init__(
        self,
        settings: VaultSettings,
        *,
        needed_by: str,
        environ: Mapping[str, str] | None = None,
        timeout: float = VAULT_TIMEOUT_SECONDS,
    ) -> None:
        self._settings = settings
        self._env = os.environ if environ is None else environ
        if settings.role_id:
            if not settings.secret_id_file and not self._env.get("VAULT_SECRET_ID"):
                raise ConfigError(
                    "vault.secret_id_file: vault.role_id is set (AppRole); give vault.secret_id_file or set"
                    " VAULT_SECRET_ID"
                )
            self.method = "approle"
            self.source = f"AppRole login at auth/{settings.auth_mount}/login"
        elif settings.token_file:
            self.method = "token"
            self.source = f"the token in vault.token_file {settings.token_file}"
        elif self._env.get("VAULT_TOKEN", "").strip():
            self.method = "token"
            self.source = "the token in VAULT_TOKEN"
        else:
            raise ConfigError(
                f"vault.token_file: {needed_by}; give Vault credentials: vault.token_file or VAULT_TOKEN (a token),"
                " or vault.role_id with vault.secret_id_file or VAULT_SECRET_ID (AppRole)"
            )
        self.client = VaultClient.from_environment(
            settings.addr, timeout=timeout, environ=self._env, ca_file=settings.ca_file, namespace=settings.namespace
        )
        self.logins = 0  # successful AppRole logins (and tokens adopted from vault.token_file)
        self.renewals = 0  # successful renewals
        self._expires: float | None = None  # time.monotonic() when the token expires; None: never
        self._full_ttl = 0  # the TTL a renewal gives; a shorter one means the max TTL is near
        self._renewable = False
        self._pending = False  # not yet authenticated (Vault was unreachable)
        self._stuck = False  # this token cannot be renewed any more (capped, refused, not renewable)
        self._expired_logged = False
        self._backoff = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ----- credentials ------------------------------------------------------------------------

    def _read_file(self, path_text: str, field: str) -> str:
        try:
            value = Path(path_text).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"{field}: cannot read {path_text}: {reason}") from None
        if not value:
            raise ConfigError(f"{field}: {path_text} is empty")
        return value

    def _read_token(self) -> str:
        if self._settings.token_file:
            return self._read_file(self._settings.token_file, "vault.token_file")
        return self._env.get("VAULT_TOKEN", "").strip()

    def _read_secret_id(self) -> str:
        if self._settings.secret_id_file:
            return self._read_file(self._settings.secret_id_file, "vault.secret_id_file")
        secret_id = self._env.get("VAULT_SECRET_ID", "").strip()
        if not secret_id:
            raise ConfigError("vault.secret_id_file: VAULT_SECRET_ID is empty; give vault.secret_id_file")
        return secret_id

    # ----- Vault calls ------------------------------------------------------------------------

    def _login_approle(self) -> None:
        """POST auth/<mount>/login with role_id and secret_id; the new token replaces the old one."""
        s = self._settings
        secret_id = self._read_secret_id()
        where = f"auth/{s.auth_mount}/login"

        login = VaultRequest.post(where, "update", {"role_id": s.role_id, "secret_id": secret_id}, anonymous=True)
        try:
            resp = self.client.call(login)
        except VaultPermissionError:  # Vault answers 403 to an unauthenticated request for a path it lacks
            raise ConfigError(
                f"vault.auth_mount: Vault refused {where} (permission denied): is an AppRole auth method enabled at"
                f" auth/{s.auth_mount}?"
            ) from None
        except KeyValidationError as exc:
            raise ConfigError(
                f"vault.role_id: the AppRole login was refused: {exc.description} (check vault.role_id and the"
                " secret_id)"
            ) from None
        auth = (resp or {}).get("auth") or {}
        token = auth.get("client_token")
        if not isinstance(token, str) or not token:
            raise ConfigError(f"vault.role_id: {where} answered without a token")
        self.client.token = token  # one attribute: requests in flight keep the old, still valid, token
        lease = int(auth.get("lease_duration") or 0)
        self._set_lease(lease, bool(auth.get("renewable")), full=lease)
        self.logins += 1
        log.info(
            "logged in to Vault at %s by AppRole (%s): token valid for %s, %s",
            s.addr,
            where,
            _seconds(lease) if lease else "ever",
            "renewable" if self._renewable else "not renewable",
        )

    def _use_token(self, token: str) -> None:
        """Adopt a token and look it up for its TTL."""
        self.client.token = token
        try:
            resp = self.client.call(VaultRequest.get("auth/token/lookup-self", replayable=True))
        except (VaultPermissionError, KeyValidationError):
            raise ConfigError(
                f"vault.token_file: Vault refused {self.source} (auth/token/lookup-self): it is invalid or expired, or"
                " its policy lacks 'read' on auth/token/lookup-self (see deploy/vault-policy.hcl)"
            ) from None
        data = (resp or {}).get("data") or {}
        ttl = int(data.get("ttl") or 0)
        self._set_lease(ttl, bool(data.get("renewable")), full=int(data.get("creation_ttl") or ttl))
        log.info(
            "using %s for Vault at %s: valid for %s, %s",
            self.source,
            self._settings.addr,
            _seconds(ttl) if ttl else "ever",
            "renewable" if self._renewable else "not renewable",
        )
        if ttl and not self._renewable:
            log.warning("%s expires in %s and cannot be renewed: replace it before then", self.source, _seconds(ttl))

    def _renew(self) -> bool:
        """POST auth/token/renew-self; True when Vault gave less than the full TTL (max TTL near)."""
        resp = self.client.call(VaultRequest.post("auth/token/renew-self", "update", {}))
        auth = (resp or {}).get("auth") or {}
        lease = int(auth.get("lease_duration") or 0)
        self._set_lease(lease, bool(auth.get("renewable")), full=self._full_ttl)
        self.renewals += 1
        log.debug("renewed the Vault token: valid for %s", _seconds(lease))
        return 0 < lease < self._full_ttl

    def _set_lease(self, ttl: int, renewable: bool, full: int) -> None:
        self._expires = time.monotonic() + ttl if ttl > 0 else None
        self._renewable = renewable
        self._full_ttl = max(full, ttl)
        self._pending = False
        self._stuck = not renewable
        self._expired_logged = False
        self._backoff = 0.0

    # ----- start, stop ------------------------------------------------------------------------

    def login(self, *, strict: bool) -> None:
        """Authenticate now. ConfigError when credentials are missing or refused; when Vault cannot be
        reached, UnavailableError with `strict`, else a warning (the renewal thread keeps trying)."""
        try:
            if self.method == "approle":
                self._login_approle()
            else:
                self._use_token(self._read_token())
        except ConfigError:
            raise
        except UnavailableError as exc:
            if strict:
                raise
            self._pending = True
            log.warning(
                "cannot reach Vault at start: %s; keysets with backend = vault answer 503 until it answers,"
                " and the login is retried",
                exc.description,
            )

    @property
    def expires_in(self) -> float | None:
        """Seconds until the token expires (None: never, or not known yet)."""
        return None if self._expires is None else self._expires - time.monotonic()

    def start(self) -> None:
        """Start the renewal thread (once); nothing to do for a token that never expires."""
        if self._thread is not None or (self._expires is None and not self._pending):
            return
        self._thread = threading.Thread(target=self._run, name="vault-token-renewal", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2)  # a request in flight ends by the client's timeout; the thread is a daemon
        self.client.close()

    # ----- the renewal thread -----------------------------------------------------------------

    def _run(self) -> None:
        delay: float | None = 0.0 if self._pending else self._scheduled()
        while delay is not None and not self._stop.wait(delay):
            try:
                delay = self._round()
            except Exception:  # never let the thread die: the service would lose Vault for good
                log.exception("Vault token renewal failed unexpectedly")
                delay = MAX_RETRY

    def _scheduled(self) -> float | None:
        """Seconds until the next renewal: about 2/3 of what is left of the TTL."""
        left = self.expires_in
        return None if left is None else max(MIN_DELAY, left * RENEW_FRACTION)

    def _retry(self) -> float:
        """Vault unreachable: back off (1, 2, 4, 5, 5 ... s), but never past a third of what is left."""
        self._backoff = min(MAX_RETRY, max(1.0, self._backoff * 2))
        left = self.expires_in
        return self._backoff if left is None or left <= 0 else max(MIN_DELAY, min(self._backoff, left / 3))

    def _round(self) -> float | None:
        """One renewal round; returns the seconds until the next one (None: nothing left to do)."""
        if self.method == "approle":
            return self._round_approle()
        return self._round_token()

    def _round_approle(self) -> float | None:
        if self._pending or self._stuck:
            try:
                self._login_approle()
            except ConfigError as exc:
                log.error("Vault AppRole login failed: %s; trying again in %.0fs", exc.description, REFUSED_RETRY)
                return REFUSED_RETRY
            except UnavailableError as exc:
                delay = self._retry()
                log.warning("Vault AppRole login failed: %s; trying again in %.1fs", exc.description, delay)
                return delay
            return self._scheduled()
        return self._renew_or(on_stuck=lambda: 0.0)

    def _round_token(self) -> float | None:
        if self._settings.token_file:
            try:
                token = self._read_token()
            except ConfigError as exc:
                log.error("%s", exc.description)
            else:
                if token != self.client.token:
                    return self._adopt(token)
        if self._pending:
            return self._adopt(self._read_token())
        if not self._stuck:
            return self._renew_or(on_stuck=self._wait_for_replacement)
        return self._wait_for_replacement()

    def _adopt(self, token: str) -> float | None:
        try:
            self._use_token(token)
        except ConfigError as exc:
            log.error("%s", exc.description)
            self._stuck = True
            return self._wait_for_replacement()
        except UnavailableError as exc:
            self._pending = True
            delay = self._retry()
            log.warning("cannot look up the Vault token: %s; trying again in %.1fs", exc.description, delay)
            return delay
        self.logins += 1
        return self._scheduled()

    def _renew_or(self, on_stuck: Callable[[], float | None]) -> float | None:
        try:
            capped = self._renew()
        except (VaultPermissionError, KeyValidationError) as exc:
            self._stuck = True
            if self.method == "approle":
                log.warning("Vault refused to renew the AppRole token (%s); logging in again", exc.description)
            else:
                log.error("Vault refused to renew %s: %s", self.source, exc.description)
            return on_stuck()
        except UnavailableError as exc:
            delay = self._retry()
            log.warning("cannot renew the Vault token: %s; trying again in %.1fs", exc.description, delay)
            return delay
        if capped:
            self._stuck = True
            left = self.expires_in or 0.0
            if self.method == "approle":
                log.info("the Vault token reaches its max TTL in %s; logging in again", _seconds(left))
            else:
                log.warning(
                    "%s reaches its max TTL in %s and Vault cannot renew it further: give the service a new token",
                    self.source,
                    _seconds(left),
                )
            return on_stuck()
        return self._scheduled()

    def _wait_for_replacement(self) -> float | None:
        """A token that cannot be renewed: warn when it has expired; re-read vault.token_file meanwhile."""
        left = self.expires_in
        if left is not None and left <= 0 and not self._expired_logged:
            self._expired_logged = True
            log.error(
                "%s has expired: keysets with backend = vault cannot sign until the service gets a new token",
                self.source,
            )
        if not self._settings.token_file:
            return None if left is None or left <= 0 else max(MIN_DELAY, left)  # VAULT_TOKEN cannot change
        return FILE_CHECK if left is None or left <= 0 else max(MIN_DELAY, min(FILE_CHECK, left))
