#!/usr/bin/env python3
"""Signs a message with dkimpy, an implementation MaiRust shares no code with, so that
MaiRust's DKIM verification is tested against signatures it did not make.

usage: dkim_sign.py rsa|ed25519 DOMAIN SELECTOR IN_FILE OUT_FILE
writes the signed message to OUT_FILE and prints the key's DNS TXT text
(`v=DKIM1; k=...; p=...`); exit 3 when dkimpy (or cryptography, PyNaCl) is missing."""

import base64
import sys

try:
    import dkim
    import nacl.signing
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
except ImportError:
    sys.exit(3)


def rsa_key():
    """A new RSA-2048 key: its PEM private key and the DNS TXT text of its public key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    return private, "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode()


def main():
    algorithm, domain, selector, src, dst = sys.argv[1:6]
    message = open(src, "rb").read()
    if algorithm == "rsa":
        private, record = rsa_key()
        signature_algorithm = b"rsa-sha256"
    else:
        key = nacl.signing.SigningKey.generate()
        private = base64.b64encode(bytes(key))
        record = "v=DKIM1; k=ed25519; p=" + base64.b64encode(bytes(key.verify_key)).decode()
        signature_algorithm = b"ed25519-sha256"
    header = dkim.sign(
        message,
        selector.encode(),
        domain.encode(),
        private,
        canonicalize=(b"relaxed", b"relaxed"),
        signature_algorithm=signature_algorithm,
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    open(dst, "wb").write(header + message)
    print(record)


if __name__ == "__main__":
    main()
