"""Drives every transit method of hvac 2.4.0 against a running `rootseal dev` and checks the
answers; signatures are verified with the `cryptography` package (an implementation independent
of the HSM), hashes with hashlib. Usage: transit_hvac.py URL TOKEN. Prints one line per check and
exits non-zero at the first failure."""

import base64
import hashlib
import sys

import hvac
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, utils

url, token = sys.argv[1], sys.argv[2]
client = hvac.Client(url=url, token=token)
t = client.secrets.transit


def b64(b):
    return base64.b64encode(b).decode()


def check(what, cond, detail=""):
    if not cond:
        print(f"FAIL {what} {detail}")
        sys.exit(1)
    print(f"ok {what}")


def refused(what, f, want):
    try:
        f()
    except hvac.exceptions.VaultError as e:
        check(what, want in str(e), f"{e!r}")
        return
    check(what, False, "was not refused")


msg = b"hvac talks to rootseal"

# Symmetric keys: create, read, list, config, rotate, encrypt/decrypt/rewrap, data keys.
def create_raw(name, kt):
    """hvac 2.4.0 refuses key types its list lacks (aes128-gcm96, hmac) before sending."""
    client.adapter.post(f"/v1/transit/keys/{name}", json={"type": kt})


for kt in ["aes256-gcm96", "aes128-gcm96"]:
    name = "sym-" + kt
    if kt == "aes256-gcm96":
        t.create_key(name=name, key_type=kt)
    else:
        create_raw(name, kt)
    k = t.read_key(name=name)["data"]
    check(f"read_key {kt}", k["type"] == kt and k["latest_version"] == 1, k)
    ct = t.encrypt_data(name=name, plaintext=b64(msg))["data"]["ciphertext"]
    pt = t.decrypt_data(name=name, ciphertext=ct)["data"]["plaintext"]
    check(f"encrypt/decrypt {kt}", base64.b64decode(pt) == msg)
    t.rotate_key(name=name)
    re = t.rewrap_data(name=name, ciphertext=ct)["data"]["ciphertext"]
    check(f"rewrap {kt}", re.startswith("vault:v2:"), re)
    batch = t.encrypt_data(name=name, plaintext="", batch_input=[{"plaintext": b64(b"a")}, {"plaintext": b64(b"b")}])
    check(f"batch encrypt {kt}", len(batch["data"]["batch_results"]) == 2, batch)
    dk = t.generate_data_key(name=name, key_type="plaintext", bits=128)["data"]
    back = t.decrypt_data(name=name, ciphertext=dk["ciphertext"])["data"]["plaintext"]
    check(f"generate_data_key {kt}", back == dk["plaintext"] and len(base64.b64decode(back)) == 16)
    t.update_key_configuration(name=name, min_decryption_version=2, deletion_allowed=True)
    refused(f"min_decryption_version {kt}", lambda: t.decrypt_data(name=name, ciphertext=ct), "too old")
    t.delete_key(name=name)
refused("list_keys with no key (404, as Vault)", t.list_keys, "")

# Signing keys: the HSM signs, `cryptography` verifies with the public key GET keys returns.
cases = [
    ("ed25519", {}, None),
    ("ecdsa-p256", {"hash_algorithm": "sha2-256"}, hashes.SHA256()),
    ("ecdsa-p384", {"hash_algorithm": "sha2-384", "marshaling_algorithm": "jws"}, hashes.SHA384()),
    ("ecdsa-p521", {"hash_algorithm": "sha2-512"}, hashes.SHA512()),
    ("rsa-2048", {"hash_algorithm": "sha2-256", "signature_algorithm": "pss"}, hashes.SHA256()),
    ("rsa-3072", {"hash_algorithm": "sha2-384", "signature_algorithm": "pkcs1v15"}, hashes.SHA384()),
    ("rsa-4096", {"hash_algorithm": "sha2-512", "signature_algorithm": "pss", "salt_length": "hash"}, hashes.SHA512()),
]
for kt, opts, h in cases:
    name = "sig-" + kt
    t.create_key(name=name, key_type=kt)
    k = t.read_key(name=name)["data"]
    pub_s = k["keys"]["1"]["public_key"]
    sig = t.sign_data(name=name, hash_input=b64(msg), **opts)["data"]["signature"]
    check(f"sign_data {kt}", sig.startswith("vault:v1:"), sig)
    ok = t.verify_signed_data(name=name, hash_input=b64(msg), signature=sig, **opts)["data"]["valid"]
    bad = t.verify_signed_data(name=name, hash_input=b64(b"other"), signature=sig, **opts)["data"]["valid"]
    check(f"verify_signed_data {kt}", ok is True and bad is False)
    payload = sig.split(":", 2)[2]
    if opts.get("marshaling_algorithm") == "jws":
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    else:
        raw = base64.b64decode(payload)
    if kt == "ed25519":
        pub = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(pub_s))
        pub.verify(raw, msg)
    elif kt.startswith("ecdsa"):
        pub = serialization.load_pem_public_key(pub_s.encode())
        if opts.get("marshaling_algorithm") == "jws":
            n = len(raw) // 2
            raw = utils.encode_dss_signature(int.from_bytes(raw[:n], "big"), int.from_bytes(raw[n:], "big"))
        pub.verify(raw, msg, ec.ECDSA(h))
    else:
        pub = serialization.load_pem_public_key(pub_s.encode())
        if opts["signature_algorithm"] == "pss":
            salt = padding.PSS.AUTO if opts.get("salt_length") is None else h.digest_size
            pub.verify(raw, msg, padding.PSS(mgf=padding.MGF1(h), salt_length=salt), h)
        else:
            pub.verify(raw, msg, padding.PKCS1v15(), h)
    check(f"independent verify {kt}", True)

keys = t.list_keys()["data"]["keys"]
check("list_keys", all("sig-" + kt in keys for kt, _, _ in cases), keys)

# RSA encryption through the ordinary paths.
ct = t.encrypt_data(name="sig-rsa-2048", plaintext=b64(msg))["data"]["ciphertext"]
pt = t.decrypt_data(name="sig-rsa-2048", ciphertext=ct)["data"]["plaintext"]
check("rsa encrypt/decrypt", base64.b64decode(pt) == msg)

# HMAC keys (hvac's test suite creates one and HMACs with it).
create_raw("mac", "hmac")
for alg in ["sha2-224", "sha2-256"]:
    mac = t.generate_hmac(name="mac", hash_input=b64(msg), algorithm=alg)["data"]["hmac"]
    ok = t.verify_signed_data(name="mac", hash_input=b64(msg), hmac=mac, hash_algorithm=alg)["data"]["valid"]
    bad = t.verify_signed_data(name="mac", hash_input=b64(b"x"), hmac=mac, hash_algorithm=alg)["data"]["valid"]
    check(f"generate_hmac + verify {alg}", ok is True and bad is False)

# random (the HSM RNG) and hash (software), against hashlib.
r = t.generate_random_bytes(n_bytes=48)["data"]["random_bytes"]
check("generate_random_bytes", len(base64.b64decode(r)) == 48)
r = t.generate_random_bytes(n_bytes=16, output_format="hex")["data"]["random_bytes"]
check("generate_random_bytes hex", len(bytes.fromhex(r)) == 16)
for alg, f in [("sha2-256", hashlib.sha256), ("sha2-512", hashlib.sha512), ("sha2-384", hashlib.sha384)]:
    s = t.hash_data(hash_input=b64(msg), algorithm=alg)["data"]["sum"]
    check(f"hash_data {alg}", s == f(msg).hexdigest(), s)

# Derived keys: hvac's `derived` and `context`; a ciphertext opens under its own context only.
t.create_key(name="derived", derived=True)
check("create_key derived", t.read_key(name="derived")["data"]["derived"] is True)
ctx_a, ctx_b = b64(b"tenant-a"), b64(b"tenant-b")
ct = t.encrypt_data(name="derived", plaintext=b64(msg), context=ctx_a)["data"]["ciphertext"]
pt = t.decrypt_data(name="derived", ciphertext=ct, context=ctx_a)["data"]["plaintext"]
check("encrypt/decrypt with context", base64.b64decode(pt) == msg)
refused("decrypt under another context", lambda: t.decrypt_data(name="derived", ciphertext=ct, context=ctx_b), "invalid ciphertext")
refused("decrypt without context", lambda: t.decrypt_data(name="derived", ciphertext=ct), "missing 'context'")
re = t.rewrap_data(name="derived", ciphertext=ct, context=ctx_a)["data"]["ciphertext"]
check("rewrap with context", base64.b64decode(t.decrypt_data(name="derived", ciphertext=re, context=ctx_a)["data"]["plaintext"]) == msg)

# Key material never leaves the HSM: export and backup are refused with a reason.
refused("create exportable", lambda: t.create_key(name="x", exportable=True), "never leaves the HSM")
refused("export_key", lambda: t.export_key(name="sig-ed25519", key_type="signing-key"), "")
refused("backup_key", lambda: t.backup_key(name="sig-ed25519"), "")
refused("chacha20-poly1305", lambda: t.create_key(name="c", key_type="chacha20-poly1305"), "CKM_CHACHA20_POLY1305")
refused("sign with an aes key", lambda: (t.create_key(name="aes"), t.sign_data(name="aes", hash_input=b64(msg))), "not supported by key type")
print("ALL OK")
