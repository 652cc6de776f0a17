# Vault / OpenBao policy for jwks-service's own Redis credentials ([store] vault_kv or vault_creds), beside
# deploy/vault-policy.hcl (which keeps the service's token alive). Keep the block of the source you use.
#
#   bao policy write jwks-service-redis deploy/vault-policy-redis.hcl
#
# Assumes store.vault_kv = "secret/data/jwks-redis#password" or store.vault_creds = "database/creds/jwks-redis";
# with other paths, change them below. tests/integration/test_redis_credentials.py runs with a token holding
# only this policy and deploy/vault-policy.hcl.

# store.vault_kv: read the latest version of the KV v2 secret (re-read when Redis refuses the password).
path "secret/data/jwks-redis" {
  capabilities = ["read"]
}

# store.vault_creds: dynamic credentials of the database secrets engine's role, and renewing their lease.
path "database/creds/jwks-redis" {
  capabilities = ["read"]
}

path "sys/leases/renew" {
  capabilities = ["update"]
}

# Optional: give a lease back when the service stops (without it, the lease expires at its TTL).
path "sys/leases/revoke" {
  capabilities = ["update"]
}
