#!/bin/sh
# Start OpenBao with rootseal as its KMS plugin. `rootseal openbao kms-config` installs this
# image's rootseal binary into the plugin directory and prints the stanzas (with the binary's
# sha256); they go to a file next to the base config and both are passed to `bao server`.
# The HSM PIN is not in any config: the plugin reads pin_file from rootseal-kms.toml.
set -eu
ROOTSEAL_CONFIG_FILE=${ROOTSEAL_KMS_CONFIG:-/etc/rootseal/rootseal-kms.toml}
BASE_CONFIG=${OPENBAO_CONFIG:-/etc/openbao/rootseal/openbao-kms.hcl}
PLUGIN_DIR=${OPENBAO_PLUGIN_DIR:-/openbao/plugins}
KMS_CONFIG=$PLUGIN_DIR/../kms-plugin.hcl

die() { echo "openbao-kms: ERROR: $*" >&2; exit 1; }
[ -f "$BASE_CONFIG" ] || die "config $BASE_CONFIG is missing (mount docker/openbao/)"
[ -f "$ROOTSEAL_CONFIG_FILE" ] || die "config $ROOTSEAL_CONFIG_FILE is missing (mount docker/rootseal/)"
rootseal openbao kms-config --config "$ROOTSEAL_CONFIG_FILE" --plugin-dir "$PLUGIN_DIR" >"$KMS_CONFIG.tmp" ||
    die "rootseal openbao kms-config failed"
mv -f "$KMS_CONFIG.tmp" "$KMS_CONFIG"
unset BAO_TOKEN VAULT_TOKEN
exec bao server -config="$BASE_CONFIG" -config="$KMS_CONFIG"
