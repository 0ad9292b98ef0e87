#!/usr/bin/env python3
"""Verifies every DKIM-Signature of a message with dkimpy, an implementation MaiRust
does not share code with. DNS answers come from a JSON file ({"name": "TXT text"}),
never from the network.

usage: dkim_verify.py MESSAGE_FILE RECORDS_JSON
prints one JSON line: [{"d": ..., "s": ..., "a": ..., "ok": true|false}, ...]
exit 0; 3 when dkimpy is not installed."""

import json
import re
import sys

try:
    import dkim
except ImportError:
    sys.exit(3)


def main():
    message = open(sys.argv[1], "rb").read()
    records = json.load(open(sys.argv[2]))
    asked = []

    def dnsfunc(name, timeout=5):
        key = name.decode() if isinstance(name, bytes) else name
        key = key.rstrip(".").lower()
        asked.append(key)
        value = records.get(key)
        return value.encode() if value is not None else None

    d = dkim.DKIM(message)
    count = len(re.findall(rb"(?im)^DKIM-Signature:", message.split(b"\r\n\r\n", 1)[0]))
    results = []
    for idx in range(count):
        try:
            ok = bool(d.verify(idx=idx, dnsfunc=dnsfunc))
            error = None
        except dkim.DKIMException as e:
            ok, error = False, str(e)
        sig = d.signature_fields or {}
        results.append({
            "d": (sig.get(b"d") or b"").decode(),
            "s": (sig.get(b"s") or b"").decode(),
            "a": (sig.get(b"a") or b"").decode(),
            "ok": ok,
            "error": error,
        })
    print(json.dumps(results))


main()
