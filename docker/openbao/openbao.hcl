# OpenBao server configuration for the docker-compose demo (mounted read-only).
# OpenBao's root key is wrapped by rootseal through Vault's transit API: OpenBao unseals
# itself at start-up by asking rootseal to decrypt it, and cannot unseal without rootseal.

ui           = false
api_addr     = "http://openbao:8200"
cluster_addr = "http://openbao:8201"

listener "tcp" {
  address         = "0.0.0.0:8200"
  cluster_address = "0.0.0.0:8201"
  tls_disable     = true # demo only: put TLS on both listeners in production
}

storage "raft" {
  path    = "/openbao/file"
  node_id = "openbao-1"
}

seal "transit" {
  address    = "http://rootseal:8210"
  mount_path = "transit/"
  key_name   = "openbao-unseal"
  # rootseal tokens are static, not renewable Vault tokens.
  disable_renewal = "true"
  # token: read from VAULT_TOKEN, which start.sh loads from the rootseal-api-token volume
  # (never written into this file).
}
