# OpenBao server configuration for the `kms-plugin` profile: rootseal runs as OpenBao's KMS
# plugin instead of behind the transit seal. start-kms.sh appends the plugin_directory,
# plugin "kms" and seal "rootseal" stanzas that `rootseal openbao kms-config` prints.

ui           = false
api_addr     = "http://openbao-kms:8200"
cluster_addr = "http://openbao-kms:8201"

listener "tcp" {
  address         = "0.0.0.0:8200"
  cluster_address = "0.0.0.0:8201"
  tls_disable     = true # demo only
}

storage "raft" {
  path    = "/openbao/file"
  node_id = "openbao-kms-1"
}
