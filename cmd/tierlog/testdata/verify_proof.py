#!/usr/bin/python3
"""An independent verifier of tierlog inclusion proof files.

    verify_proof.py PROOF.json PUBLIC_KEY

Written from the specifications, not from tierlog's Go code, with nothing
but Python's hashlib, base64 and json and Debian's python3-nacl (Ed25519):
  - the leaf: docs/format.md "Verifiable history" (FORMAT10);
  - inclusion: RFC 9162 section 2.1.3.2, with RFC 6962 hashing
    (leaf = SHA-256(0x00 || leaf), node = SHA-256(0x01 || left || right));
  - the checkpoint: C2SP tlog-checkpoint (origin, size, base64 root),
    signed as a C2SP signed-note with an Ed25519 key whose verifier key is
    "<name>+<hex key hash>+<base64(0x01 || public key)>", key hash =
    SHA-256(name || "\\n" || 0x01 || public key)[:4].

Exit 0: the proof is valid; 1: it is not (the reason on stderr); 2: usage.
"""

import base64
import hashlib
import json
import sys

import nacl.exceptions
import nacl.signing


class Invalid(Exception):
    pass


def be(n, size, signed=False):
    return n.to_bytes(size, "big", signed=signed)


def nullable(b):
    """i32 length (-1 for null), then the bytes."""
    if b is None:
        return be(-1, 4, signed=True)
    return be(len(b), 4, signed=True) + b


TOP_FIELDS = {"format", "topic", "partition", "offset", "record", "leaf", "tree_size", "inclusion_proof", "checkpoint"}
RECORD_FIELDS = {"offset", "timestamp", "key", "value", "headers", "control"}
HEADER_FIELDS = {"key", "value"}


def no_duplicates(pairs):
    """object_pairs_hook: a field named twice is refused (json keeps the last)."""
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise Invalid("field %r given twice" % k)
        obj[k] = v
    return obj


def refuse_constant(name):
    raise Invalid("%s is not JSON" % name)


def exact(obj, fields, where):
    """obj is an object with exactly these field names (case-sensitive)."""
    if not isinstance(obj, dict):
        raise Invalid("%s: want an object" % where)
    if set(obj) != fields:
        raise Invalid("%s: fields %s, want exactly %s" % (where, sorted(obj), sorted(fields)))


def integer(v, where, lo, hi):
    """An integer in [lo, hi]: not a bool (a Python int), not a float."""
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise Invalid("%s: %r is not an integer from %d to %d" % (where, v, lo, hi))
    return v


def string(v, where, nullable=False):
    if not (isinstance(v, str) or nullable and v is None):
        raise Invalid("%s: %r is not a string%s" % (where, v, " or null" if nullable else ""))
    return v


def check_shape(proof):
    """The file as format.md documents it, and the types Go's decoder
    accepts, so both verifiers read the same proof or refuse it."""
    i64 = (-(1 << 63), (1 << 63) - 1)
    exact(proof, TOP_FIELDS, "the file")
    string(proof["format"], "format")
    string(proof["topic"], "topic")
    integer(proof["partition"], "partition", -(1 << 31), (1 << 31) - 1)
    integer(proof["offset"], "offset", 0, i64[1])
    integer(proof["tree_size"], "tree_size", 0, (1 << 64) - 1)
    string(proof["leaf"], "leaf")
    string(proof["checkpoint"], "checkpoint")
    if not isinstance(proof["inclusion_proof"], list):
        raise Invalid("inclusion_proof: want an array")
    for p in proof["inclusion_proof"]:
        string(p, "inclusion_proof")
    rec = proof["record"]
    exact(rec, RECORD_FIELDS, "record")
    integer(rec["offset"], "record.offset", *i64)
    integer(rec["timestamp"], "record.timestamp", *i64)
    string(rec["key"], "record.key", nullable=True)
    string(rec["value"], "record.value", nullable=True)
    if not isinstance(rec["control"], bool):
        raise Invalid("record.control: %r is not true or false" % rec["control"])
    if not isinstance(rec["headers"], list):
        raise Invalid("record.headers: want an array")
    for h in rec["headers"]:
        exact(h, HEADER_FIELDS, "record header")
        string(h["key"], "header key")
        string(h["value"], "header value", nullable=True)


def b64_or_none(v):
    return None if v is None else base64.b64decode(v, validate=True)


def encode_leaf(rec):
    """The canonical leaf of a record (kind 1)."""
    out = bytes([1]) + be(rec["offset"], 8, signed=True)
    out += bytes([1 if rec["control"] else 0])
    out += be(rec["timestamp"], 8, signed=True)
    out += nullable(b64_or_none(rec["key"]))
    out += nullable(b64_or_none(rec["value"]))
    headers = rec["headers"]
    out += be(len(headers), 4)
    for h in headers:
        k = base64.b64decode(h["key"], validate=True)  # bytes, like the value
        out += be(len(k), 4) + k
        out += nullable(b64_or_none(h["value"]))
    return out


def leaf_hash(leaf):
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion(leaf_index, tree_size, h, path):
    """RFC 9162 2.1.3.2: the root the inclusion path gives, or Invalid."""
    if leaf_index >= tree_size:
        raise Invalid("leaf index %d is not below tree size %d" % (leaf_index, tree_size))
    fn, sn, r = leaf_index, tree_size - 1, h
    for p in path:
        if sn == 0:
            raise Invalid("the inclusion path is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise Invalid("the inclusion path is too short")
    return r


def parse_vkey(vkey):
    """(name, key hash, Ed25519 public key) of a verifier key."""
    parts = vkey.strip().split("+", 2)  # base64 may hold "+"
    if len(parts) != 3:
        raise Invalid("public key %r is not <name>+<hash>+<key>" % vkey)
    name, hash_hex, key_b64 = parts
    key = base64.b64decode(key_b64, validate=True)
    if len(key) != 33 or key[0] != 1:
        raise Invalid("public key %r is not an Ed25519 key" % vkey)
    want = hashlib.sha256(name.encode() + b"\n" + key).digest()[:4]
    if bytes.fromhex(hash_hex) != want:
        raise Invalid("public key %r: its hash does not match its name and key" % vkey)
    return name, want, key[1:]


def open_note(text, vkey):
    """The body of a signed note that carries a valid signature by vkey."""
    name, khash, pub = parse_vkey(vkey)
    sep = text.rfind("\n\n")
    if sep < 0 or not text.endswith("\n"):
        raise Invalid("the checkpoint is not a signed note")
    body, sigs = text[: sep + 1], text[sep + 2 :].splitlines()
    for line in sigs:
        if not line.startswith("\u2014 "):
            raise Invalid("malformed signature line %r" % line)
        sig_name, _, sig_b64 = line[2:].rpartition(" ")
        sig = base64.b64decode(sig_b64, validate=True)
        if sig_name != name or sig[:4] != khash:
            continue
        try:
            nacl.signing.VerifyKey(pub).verify(body.encode("utf-8"), sig[4:])
        except nacl.exceptions.BadSignatureError:
            raise Invalid("the signature by %s does not verify" % name)
        return body
    raise Invalid("the checkpoint carries no signature by %s" % name)


def verify(proof, vkey):
    check_shape(proof)
    if proof.get("format") != "tierlog-inclusion-proof-v1":
        raise Invalid("format %r" % proof.get("format"))
    rec, offset, size = proof["record"], proof["offset"], proof["tree_size"]
    if rec["offset"] != offset:
        raise Invalid("the record is offset %d, the proof is for %d" % (rec["offset"], offset))
    leaf = encode_leaf(rec)
    if leaf != base64.b64decode(proof["leaf"], validate=True):
        raise Invalid("the leaf is not the record's canonical encoding")
    path = [base64.b64decode(p, validate=True) for p in proof["inclusion_proof"]]
    root = root_from_inclusion(offset, size, leaf_hash(leaf), path)

    body = open_note(proof["checkpoint"], vkey).split("\n")
    origin, cp_size, cp_root = body[0], int(body[1]), base64.b64decode(body[2], validate=True)
    o = origin.split("/")
    if len(o) != 4 or o[0] != "tierlog" or o[2] != proof["topic"] or o[3] != str(proof["partition"]):
        raise Invalid("checkpoint origin %r is not of %s/%d" % (origin, proof["topic"], proof["partition"]))
    if cp_size != size:
        raise Invalid("checkpoint of size %d, proof of size %d" % (cp_size, size))
    if cp_root != root:
        raise Invalid("the inclusion proof gives another root than the checkpoint's")


def main():
    if len(sys.argv) != 3:
        print("usage: verify_proof.py PROOF.json PUBLIC_KEY", file=sys.stderr)
        return 2
    try:
        with open(sys.argv[1], encoding="utf-8") as f:
            proof = json.load(f, object_pairs_hook=no_duplicates, parse_constant=refuse_constant)
        verify(proof, sys.argv[2])
    except (Invalid, KeyError, ValueError, TypeError, OverflowError) as e:
        print("invalid: %s" % e, file=sys.stderr)
        return 1
    print("valid: offset %d of %s/%d" % (proof["offset"], proof["topic"], proof["partition"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
