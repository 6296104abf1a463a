//! HCL that points Vault/OpenBao at rootseal, plus a raft server config for tests and demos.
//!
//! Vault and OpenBao parse their server config with HCL 1. Every string rendered here goes
//! through [`hcl_string`], which escapes quotes, backslashes, control characters and the `${`
//! interpolation opener, so a value can never end a string or inject a stanza.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

/// The name under which rootseal's KMS plugin and its seal are declared.
pub const KMS_PLUGIN_NAME: &str = "rootseal";

/// `s` as a quoted HCL string literal.
///
/// Escapes `"` and `\`, writes `\n`, `\r`, `\t` and other control characters as escapes, and
/// breaks up `${` and `%{` (written `$\u007b`) so that neither HCL 1 nor HCL 2 sees an
/// interpolation; the parsed value is exactly `s`.
pub fn hcl_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' | '%' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push(c);
                out.push_str("\\u007b");
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A key as HCL writes it: bare when it is an identifier, quoted otherwise.
fn hcl_key(k: &str) -> String {
    let mut bytes = k.bytes();
    let ident = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ident {
        k.to_owned()
    } else {
        hcl_string(k)
    }
}

/// A block `header { key = value ... }` with the `=` signs aligned (as `bao`'s docs write them).
/// Values are already rendered HCL.
fn block(header: &str, fields: &[(String, String)]) -> String {
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = format!("{header} {{\n");
    for (k, v) in fields {
        let _ = writeln!(out, "  {k:<width$} = {v}");
    }
    out.push_str("}\n");
    out
}

fn field(key: &str, value: &str) -> (String, String) {
    (hcl_key(key), hcl_string(value))
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The `seal "transit" { ... }` stanza that makes Vault/OpenBao auto-unseal through rootseal's
/// transit API.
///
/// * `address`: rootseal's listener, e.g. `https://rootseal.internal:8210`.
/// * `token`: rootseal's token; `None` leaves it out so that it comes from the environment
///   (`VAULT_TRANSIT_SEAL_TOKEN`), which keeps it out of the config file.
/// * `key_name`: the transit key (keep it in rootseal's `storage.local_keys`).
/// * `mount_path`: rootseal's `transit.mount`; rendered with one trailing `/`.
/// * `tls_ca_cert`: the CA that signed rootseal's certificate, for an `https` address.
///
/// `disable_renewal = "true"`: rootseal's tokens are not Vault tokens and are not renewable.
pub fn render_transit_seal_stanza(
    address: &str,
    token: Option<&str>,
    key_name: &str,
    mount_path: &str,
    tls_ca_cert: Option<&Path>,
) -> String {
    let mount = format!("{}/", mount_path.trim_matches('/'));
    let mut fields = vec![field("address", address)];
    if let Some(token) = token {
        fields.push(field("token", token));
    }
    fields.push(field("key_name", key_name));
    fields.push(field("mount_path", &mount));
    fields.push(field("disable_renewal", "true"));
    if let Some(ca) = tls_ca_cert {
        fields.push(field("tls_ca_cert", &path_str(ca)));
    }
    block("seal \"transit\"", &fields)
}

/// A complete OpenBao server config with raft storage in `data_dir`, a plain-HTTP listener on
/// `api_address` (cluster traffic on `cluster_address`), and `seal` (any extra HCL, typically a
/// seal stanza; `None` means Shamir) appended.
pub fn render_openbao_server_config(
    data_dir: &Path,
    node_id: &str,
    api_address: SocketAddr,
    cluster_address: SocketAddr,
    seal: Option<&str>,
) -> String {
    let mut out = block(
        "storage \"raft\"",
        &[
            field("path", &path_str(data_dir)),
            field("node_id", node_id),
        ],
    );
    out.push('\n');
    out.push_str(&block(
        "listener \"tcp\"",
        &[
            field("address", &api_address.to_string()),
            field("cluster_address", &cluster_address.to_string()),
            ("tls_disable".into(), "true".into()),
        ],
    ));
    out.push('\n');
    let _ = writeln!(
        out,
        "api_addr     = {}",
        hcl_string(&format!("http://{api_address}"))
    );
    let _ = writeln!(
        out,
        "cluster_addr = {}",
        hcl_string(&format!("https://{cluster_address}"))
    );
    if let Some(seal) = seal {
        out.push('\n');
        out.push_str(seal);
        if !seal.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// The stanzas that load rootseal as an OpenBao (2.6+) external KMS plugin and use it as the
/// seal: `plugin_directory`, `plugin "kms" "rootseal" { command, args, sha256sum, version }` and
/// `seal "rootseal" { ... }` with `seal_config` as its config map (passed to the plugin's
/// `SetConfig`).
///
/// `binary_name` is the file in `plugin_dir`; `args` the arguments OpenBao passes to it (omitted
/// when empty); `sha256_hex` its SHA-256 (lowercase hex); `version` the plugin version (OpenBao
/// requires it, e.g. `v0.1.0`).
pub fn render_kms_plugin_stanzas(
    plugin_dir: &Path,
    binary_name: &str,
    args: &[&str],
    sha256_hex: &str,
    version: &str,
    seal_config: &[(&str, &str)],
) -> String {
    let mut out = format!(
        "plugin_directory = {}\n\n",
        hcl_string(&path_str(plugin_dir))
    );
    out.push_str(&block(
        &format!("plugin \"kms\" {}", hcl_string(KMS_PLUGIN_NAME)),
        &{
            let mut f = vec![field("command", binary_name)];
            if !args.is_empty() {
                let list: Vec<String> = args.iter().map(|a| hcl_string(a)).collect();
                f.push(("args".to_owned(), format!("[{}]", list.join(", "))));
            }
            f.push(field("sha256sum", sha256_hex));
            f.push(field("version", version));
            f
        },
    ));
    out.push('\n');
    let fields: Vec<_> = seal_config.iter().map(|(k, v)| field(k, v)).collect();
    out.push_str(&block(
        &format!("seal {}", hcl_string(KMS_PLUGIN_NAME)),
        &fields,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hcl_strings_are_escaped() {
        assert_eq!(hcl_string("plain"), r#""plain""#);
        assert_eq!(hcl_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(hcl_string("l1\nl2\r\t"), r#""l1\nl2\r\t""#);
        assert_eq!(hcl_string("\u{1}\u{7f}"), r#""\u0001\u007f""#);
        assert_eq!(hcl_string("${x} %{y} $ {"), r#""$\u007bx} %\u007by} $ {""#);
        assert_eq!(hcl_string("é✓"), "\"é✓\"");
        // A value cannot close the string and inject a stanza.
        let evil = "x\"\n}\nseal \"static\" {";
        let s = hcl_string(evil);
        assert!(!s[1..s.len() - 1].contains("\"\n"), "{s}");
        assert_eq!(s.matches('\n').count(), 0);
    }

    #[test]
    fn transit_stanza_exact() {
        let s = render_transit_seal_stanza(
            "https://rootseal.internal:8210",
            Some("rs.tok\"en"),
            "autounseal",
            "/transit",
            Some(Path::new("/etc/rootseal/ca.pem")),
        );
        assert_eq!(
            s,
            r#"seal "transit" {
  address         = "https://rootseal.internal:8210"
  token           = "rs.tok\"en"
  key_name        = "autounseal"
  mount_path      = "transit/"
  disable_renewal = "true"
  tls_ca_cert     = "/etc/rootseal/ca.pem"
}
"#
        );
        let s = render_transit_seal_stanza("http://127.0.0.1:8210", None, "k", "a/b/", None);
        assert_eq!(
            s,
            r#"seal "transit" {
  address         = "http://127.0.0.1:8210"
  key_name        = "k"
  mount_path      = "a/b/"
  disable_renewal = "true"
}
"#
        );
    }

    #[test]
    fn server_config_exact() {
        let seal = render_transit_seal_stanza("http://127.0.0.1:1", None, "k", "transit", None);
        let s = render_openbao_server_config(
            Path::new("/var/lib/bao"),
            "n1",
            "127.0.0.1:8200".parse().unwrap(),
            "127.0.0.1:8201".parse().unwrap(),
            Some(&seal),
        );
        assert_eq!(
            s,
            r#"storage "raft" {
  path    = "/var/lib/bao"
  node_id = "n1"
}

listener "tcp" {
  address         = "127.0.0.1:8200"
  cluster_address = "127.0.0.1:8201"
  tls_disable     = true
}

api_addr     = "http://127.0.0.1:8200"
cluster_addr = "https://127.0.0.1:8201"

seal "transit" {
  address         = "http://127.0.0.1:1"
  key_name        = "k"
  mount_path      = "transit/"
  disable_renewal = "true"
}
"#
        );
        let shamir = render_openbao_server_config(
            Path::new("d"),
            "n",
            "[::1]:1".parse().unwrap(),
            "[::1]:2".parse().unwrap(),
            None,
        );
        assert!(
            shamir.ends_with("cluster_addr = \"https://[::1]:2\"\n"),
            "{shamir}"
        );
        assert!(!shamir.contains("seal"));
    }

    #[test]
    fn kms_plugin_stanzas_exact() {
        let s = render_kms_plugin_stanzas(
            Path::new("/usr/lib/openbao/plugins"),
            "rootseal",
            &["openbao", "kms-plugin"],
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "v0.1.0",
            &[
                ("address", "unix:///run/rootseal.sock"),
                ("key_name", "autounseal"),
                ("odd key", "v"),
            ],
        );
        assert_eq!(
            s,
            r#"plugin_directory = "/usr/lib/openbao/plugins"

plugin "kms" "rootseal" {
  command   = "rootseal"
  args      = ["openbao", "kms-plugin"]
  sha256sum = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
  version   = "v0.1.0"
}

seal "rootseal" {
  address   = "unix:///run/rootseal.sock"
  key_name  = "autounseal"
  "odd key" = "v"
}
"#
        );
    }
}
