# Vault / OpenBao policy for jwks-service: exactly what its Transit backend, envelope mode (a KEK wrapped
# by Transit) and its token renewal need.
#
#   bao policy write jwks-service deploy/vault-policy.hcl      (or: vault policy write ...)
#
# Attach it to the service's token, or to its AppRole (token_policies=jwks-service): logging in needs
# no policy.
#
# Assumes the transit engine at "transit/" and the default key prefix "jwks-" (keyset K is the Transit
# key jwks-K). With another [vault] transit_mount or prefix, change the paths below to match.
# tests/contract/test_vault_backend.py runs the backend's whole flow with a token holding only this
# policy, and checks that it grants nothing else.

# Create the keyset's key (never exportable, no plaintext backup), read it (public keys, versions),
# rotate it (new versions), raise its minimum versions and trim it (retirement).
# The glob also covers keys/jwks-*/rotate, /config and /trim; allowed_parameters keep every request
# on these paths to the fields the service sends, so this token cannot make a key exportable,
# deletable or auto-rotating, nor import outside key material (import needs "ciphertext").
path "transit/keys/jwks-*" {
  capabilities = ["create", "read", "update"]
  allowed_parameters = {
    "type"                   = []
    "key_size"               = []
    "exportable"             = [false]
    "allow_plaintext_backup" = [false]
    "min_decryption_version" = []
    "min_encryption_version" = []
    "min_available_version"  = []
  }
}

# Sign token signing inputs (RS*, PS*, ES*, EdDSA), singly or batched, pinned to a key version.
path "transit/sign/jwks-*" {
  capabilities = ["update"]
}

# HS* keysets: compute HMACs, and verify them (the secret never leaves Vault).
path "transit/hmac/jwks-*" {
  capabilities = ["update"]
}

path "transit/verify/jwks-*" {
  capabilities = ["update"]
}

# Envelope mode, secrets.kek = "vault-transit:jwks-kek": wrap a new KEK on first start, unwrap it at every
# start. The key itself is created (aes256-gcm96, not exportable) through transit/keys/jwks-* above.
# With another key name, change these two paths (and create the key yourself if it is not jwks-*).
path "transit/encrypt/jwks-kek" {
  capabilities = ["update"]
}

path "transit/decrypt/jwks-kek" {
  capabilities = ["update"]
}

# `jwks-service kek rewrap`: the same KEK under the key's latest version (the plaintext stays in Vault).
path "transit/rewrap/jwks-kek" {
  capabilities = ["update"]
}

# Keep the service's own token alive (also in Vault's default policy; here so this file suffices alone).
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}
