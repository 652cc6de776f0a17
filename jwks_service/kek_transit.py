"""The KEK wrapped by a Vault / OpenBao Transit encryption key (envelope mode, ``kek = "vault-transit:<key>"``).

`TransitWrapper` is the `kek.KeyWrapper` that `kek.load_wrapped_kek` unwraps the KEK with: Transit
encrypts and decrypts, the wrapping key never leaves Vault.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

from .errors import ConfigError, KeyValidationError
from .vaultapi import VaultClient, VaultPermissionError, VaultRequest

log = logging.getLogger(__name__)


class TransitWrapper:
    """Envelope encryption with a Transit encryption key: wraps and unwraps a data key (the KEK).

    The wrapping key is made inside Vault (``aes256-gcm96``, never exportable) and never leaves it;
    what the service keeps on disk is only Transit's ciphertext (``vault:v<n>:...``). Errors become
    `ConfigError` (permission, missing or unsuitable key, undecryptable ciphertext: a human must act)
    or `UnavailableError` (Vault unreachable, sealed, failing: try again).
    """

    KEY_TYPE = "aes256-gcm96"

    def __init__(self, client: VaultClient, mount: str, key_name: str) -> None:
        self._client = client
        self._mount = mount.strip("/")
        self.key_name = key_name
        self.description = f"Vault Transit key {self._mount}/keys/{key_name}"

    def _call(self, method: str, operation: str, capability: str, data: Any = None, **options: Any) -> Any:
        """One request on <mount>/<operation>/<key>; refusals become ConfigError."""
        hint = f" (is the transit engine mounted at {self._mount}?)"
        path = f"{self._mount}/{operation}/{self.key_name}"
        engine = ("transit", self._mount)
        if method == "POST":
            request = VaultRequest.post(path, capability, data, missing=hint, engine=engine, **options)
        else:
            request = VaultRequest.get(path, capability, missing=hint, engine=engine, **options)
        try:
            return self._client.call(request)
        except (VaultPermissionError, KeyValidationError) as exc:
            raise ConfigError(exc.description) from None

    def _ciphertext(self, operation: str, data: dict[str, str], field: str) -> str:
        resp = self._call("POST", operation, "update", data)
        value = ((resp or {}).get("data") or {}).get(field)
        if field == "ciphertext" and (not isinstance(value, str) or not value.startswith("vault:v")):
            raise ConfigError(f"{self._mount}/{operation}/{self.key_name}: Vault answered without a ciphertext")
        return value if isinstance(value, str) else "-"

    def ensure_key(self) -> None:
        """Create the wrapping key when it does not exist; refuse one that cannot wrap."""
        try:
            resp = self._call("GET", "keys", "read", absent_ok=True)
        except ConfigError as exc:  # no 'read' on the key: an operator made it; encrypt will tell
            log.info("cannot read %s, assuming it exists: %s", self.description, exc.description)
            return
        if resp is None:
            body = {"type": self.KEY_TYPE, "exportable": False, "allow_plaintext_backup": False}
            self._call("POST", "keys", "create", body)
            log.info("created %s (%s, not exportable) to wrap the KEK", self.description, self.KEY_TYPE)
            return
        info = resp.get("data") or {}
        if not info.get("supports_encryption", True) or info.get("derived"):
            raise ConfigError(
                f"{self.description} is a {info.get('type')}{' derived' if info.get('derived') else ''} key, which "
                f"cannot wrap the KEK; name a {self.KEY_TYPE} key"
            )
        if info.get("exportable") or info.get("allow_plaintext_backup"):
            log.warning("%s is exportable or allows plaintext backups: the KEK is only as safe as it", self.description)

    def wrap(self, data: bytes) -> str:
        return self._ciphertext("encrypt", {"plaintext": base64.b64encode(data).decode("ascii")}, "ciphertext")

    def rewrap(self, ciphertext: str) -> str:
        """The same plaintext under the key's latest version (Transit never shows it to us)."""
        return self._ciphertext("rewrap", {"ciphertext": ciphertext}, "ciphertext")

    def unwrap(self, ciphertext: str) -> bytes:
        plaintext = self._ciphertext("decrypt", {"ciphertext": ciphertext}, "plaintext")
        try:
            return base64.b64decode(plaintext, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{self._mount}/decrypt/{self.key_name}: Vault answered without a plaintext") from None
