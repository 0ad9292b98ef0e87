#!/usr/bin/env python3
"""Seals a message with an ARC set (RFC 8617) made by dkimpy, an implementation MaiRust
shares no code with, as a forwarder would before passing it on: MaiRust's ARC
verification is tested against seals it did not make.

usage: arc_sign.py DOMAIN SELECTOR IN_FILE OUT_FILE
The message must carry the forwarder's own `Authentication-Results: DOMAIN; ...` field
(ARC-Authentication-Results copies it). A new RSA-2048 key seals it as d=DOMAIN,
s=SELECTOR; the ARC-Message-Signature covers From, To, Subject and Date (not
Message-ID, which a test may change to tell copies apart) and the body. Writes the
sealed message to OUT_FILE and prints the key's DNS TXT text. Before that, dkimpy
verifies the seal against that text (exit 1 if it does not pass), so a test never
relies on a seal that is broken from the start. Exit 3 when dkimpy, cryptography or
authres (which dkimpy's ARC needs) is missing."""

import sys

# dkim_sign is imported from beside this file: leave no __pycache__ in the source tree.
sys.dont_write_bytecode = True

try:
    import authres  # noqa: F401  (dkim.arc_sign needs it)
    import dkim
    from dkim_sign import rsa_key
except ImportError:
    sys.exit(3)


def main():
    domain, selector, src, dst = sys.argv[1:5]
    message = open(src, "rb").read()
    private, record = rsa_key()
    fields = dkim.arc_sign(
        message,
        selector.encode(),
        domain.encode(),
        private,
        domain.encode(),
        include_headers=[b"from", b"to", b"subject", b"date"],
    )
    if not fields:
        sys.exit("no ARC set made: the message has no Authentication-Results: %s field" % domain)
    sealed = b"".join(fields) + message

    name = "%s._domainkey.%s" % (selector, domain)

    def dnsfunc(asked, timeout=5):
        asked = asked.decode() if isinstance(asked, bytes) else asked
        return record.encode() if asked.rstrip(".").lower() == name else None

    cv, _, reason = dkim.arc_verify(sealed, dnsfunc=dnsfunc)
    if cv != dkim.CV_Pass:
        sys.exit("dkimpy does not verify its own seal: %s %s" % (cv, reason))
    open(dst, "wb").write(sealed)
    print(record)


main()
