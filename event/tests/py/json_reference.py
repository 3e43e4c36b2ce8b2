#!/usr/bin/env python3
"""Reference for meshaudit-event's JSON parser and canonical form.

Generates random JSON documents (as text, written the awkward ways other
producers write them) and prints, one case per line:

    <mode> <hex of the UTF-8 input> ok:<hex of canonical bytes>
    <mode> <hex of the UTF-8 input> err:<kind>

where the canonical bytes are Python's own
``json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))`` and
``kind`` is the refusal SPEC §4/§5 asks for: ``NonFiniteNumber`` (NaN,
Infinity, a float that overflows a double), ``TooDeep`` (more than 128 nested
containers), ``LoneSurrogate`` (Python accepts them, a Rust string cannot hold
them), ``InvalidNumber`` (an integer past CPython's 4300-digit limit) or
``Syntax`` (json.loads refuses). ``mode`` is ``k`` when the Rust side must
report that very kind, ``e`` when only accept/refuse must agree (mutated
documents with several faults, where which one is seen first may differ).

Usage: json_reference.py SEED COUNT
"""
import json
import math
import random
import struct
import sys
from decimal import Decimal

MAX_DEPTH = 128
INT_DIGITS = 4300
if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(INT_DIGITS)


class Refused(Exception):
    def __init__(self, kind):
        super().__init__(kind)
        self.kind = kind


def _constant(name):
    raise Refused("NonFiniteNumber")


def _float(text):
    f = float(text)
    if math.isinf(f):
        raise Refused("NonFiniteNumber")
    return f


def _int(text):
    if len(text.lstrip("-")) > INT_DIGITS:
        raise Refused("InvalidNumber")
    return int(text)


class _Members(list):
    """An object's members as written, duplicates included."""


def _depth(v):
    # Iterative: documents nest far deeper than Python's recursion limit.
    best, stack = 0, [(v, 1)]
    while stack:
        x, d = stack.pop()
        if isinstance(x, _Members):
            best = max(best, d)
            stack.extend((member, d + 1) for _, member in x)
        elif isinstance(x, list):
            best = max(best, d)
            stack.extend((c, d + 1) for c in x)
    return best


def _has_surrogate(v):
    stack = [v]
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            if any(0xD800 <= ord(c) <= 0xDFFF for c in x):
                return True
        elif isinstance(x, _Members):
            for k, member in x:
                stack.append(k)
                stack.append(member)
        elif isinstance(x, list):
            stack.extend(x)
    return False


def reference(text):
    hooks = dict(parse_constant=_constant, parse_float=_float, parse_int=_int)
    try:
        # The limits apply to the document as written, before a duplicate key
        # replaces an earlier member.
        written = json.loads(text, object_pairs_hook=_Members, **hooks)
    except Refused as e:
        return "err:" + e.kind
    except RecursionError:
        return "err:TooDeep"
    except ValueError:
        return "err:Syntax"
    if _depth(written) > MAX_DEPTH:
        return "err:TooDeep"
    if _has_surrogate(written):
        return "err:LoneSurrogate"
    v = json.loads(text, **hooks)
    out = json.dumps(v, sort_keys=True, separators=(",", ":"))
    return "ok:" + out.encode("ascii").hex()


class Gen:
    def __init__(self, rng):
        self.r = rng

    # --- whitespace and strings ---

    def ws(self):
        r = self.r
        if r.random() < 0.7:
            return ""
        return "".join(r.choice(" \t\n\r") for _ in range(r.randint(1, 3)))

    def char(self):
        r = self.r
        pick = r.random()
        if pick < 0.35:
            return chr(r.randint(0x20, 0x7E))
        if pick < 0.45:
            return chr(r.randint(0x00, 0x1F))
        if pick < 0.5:
            return "\x7f"
        if pick < 0.7:
            c = r.randint(0x80, 0xFFFF)
            return chr(c) if not 0xD800 <= c <= 0xDFFF else "\ufffd"
        if pick < 0.75:
            return r.choice(["\ufffe", "\uffff", "\u2028", "\u2029", "\ufeff", "\u00a0", "/", "\\", '"'])
        # Every plane: 1 (emoji, historic scripts) to 16 (private use).
        plane = r.randint(1, 16)
        return chr(plane * 0x10000 + r.randint(0, 0xFFFF))

    def escape(self, c):
        """One character written in a random legal way."""
        r = self.r
        o = ord(c)
        short = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f", "/": "\\/"}
        must = c in '"\\' or o < 0x20
        if not must and r.random() < 0.6:
            return c
        if c in short and r.random() < 0.6:
            return short[c]
        fmt = "\\u%04x" if r.random() < 0.5 else "\\u%04X"
        if o > 0xFFFF:
            o -= 0x10000
            return fmt % (0xD800 + (o >> 10)) + fmt % (0xDC00 + (o & 0x3FF))
        return fmt % o

    def string(self, max_len=12):
        n = self.r.choice([0, 1, 2, 3, 5, 8, max_len])
        return '"' + "".join(self.escape(self.char()) for _ in range(n)) + '"'

    # --- numbers ---

    def integer(self):
        r = self.r
        pick = r.random()
        if pick < 0.3:
            return str(r.randint(-1000, 1000))
        if pick < 0.5:
            return r.choice(["0", "-0", "9223372036854775807", "-9223372036854775808",
                             "9223372036854775808", "-9223372036854775809",
                             "18446744073709551615", "18446744073709551616",
                             "170141183460469231731687303715884105728"])
        if pick < 0.8:
            return str(r.randint(-(2 ** 64), 2 ** 64))
        if pick < 0.98:
            digits = r.randint(20, 400)
            return r.choice(["", "-"]) + str(r.randint(1, 9)) + "".join(r.choice("0123456789") for _ in range(digits - 1))
        digits = r.choice([INT_DIGITS - 1, INT_DIGITS])
        return r.choice(["", "-"]) + "7" * digits

    def random_double(self):
        while True:
            f = struct.unpack("<d", self.r.getrandbits(64).to_bytes(8, "little"))[0]
            if math.isfinite(f):
                return f

    def float_text(self):
        r = self.r
        pick = r.random()
        if pick < 0.35:
            f = self.random_double()
        elif pick < 0.55:
            f = r.choice([0.0, -0.0, 1.0, 0.1, 1e-5, 2.5e-7, 1e16, 1e15, 0.0001, 123.456, 5e-324,
                          2.2250738585072014e-308, 2.225073858507201e-308, 1.7976931348623157e308,
                          9007199254740993.0, 0.30000000000000004, 1e22, 1e23, 100.0, 1.5])
            f = -f if r.random() < 0.3 else f
        elif pick < 0.75:
            f = r.uniform(-1e6, 1e6) * 10.0 ** r.randint(-30, 30)
        else:
            # A random decimal string: many digits, any exponent.
            mant = "".join(r.choice("0123456789") for _ in range(r.randint(1, 40))).lstrip("0") or "0"
            frac = "".join(r.choice("0123456789") for _ in range(r.randint(1, 30)))
            exp = r.randint(-340, 320)
            sign = "-" if exp < 0 else r.choice(["", "+"])
            return r.choice(["", "-"]) + mant + "." + frac + r.choice("eE") + sign + str(abs(exp)).zfill(r.randint(1, 4))
        style = r.random()
        if style < 0.4:
            text = repr(f)
        elif style < 0.55:
            text = "%.*e" % (r.randint(0, 20), f)
        elif style < 0.65:
            text = "%.*E" % (r.randint(0, 20), f)
        elif style < 0.75 and abs(f) < 1e30:
            text = "%.*f" % (r.randint(1, 25), f)
        elif style < 0.85:
            text = "%.17g" % f
        else:
            text = format(Decimal(f), "f") if abs(f) < 1e40 and abs(f) > 1e-40 or f == 0 else repr(f)
        if "e" not in text.lower() and "." not in text:
            text += r.choice([".0", ".00", "e0", "E+00", "e-0"])
        return text

    def number(self):
        return self.integer() if self.r.random() < 0.5 else self.float_text()

    # --- documents ---

    def scalar(self):
        r = self.r
        pick = r.random()
        if pick < 0.3:
            return self.string()
        if pick < 0.75:
            return self.number()
        return r.choice(["true", "false", "null", "0", "false", '""'])

    def value(self, depth, budget):
        r = self.r
        if depth >= MAX_DEPTH or budget[0] <= 0 or r.random() < 0.35:
            return self.scalar()
        budget[0] -= 1
        n = r.choice([0, 0, 1, 2, 3, 4, 6])
        if r.random() < 0.5:
            items = [self.value(depth + 1, budget) for _ in range(n)]
            return "[" + self.ws() + ("," + self.ws()).join(self.ws() + i + self.ws() for i in items) + "]"
        keys = [self.string(6) for _ in range(n)]
        if keys and r.random() < 0.3:
            keys.append(r.choice(keys))  # duplicate key: the last one wins
        members = [self.ws() + k + self.ws() + ":" + self.ws() + self.value(depth + 1, budget) + self.ws() for k in keys]
        return "{" + ",".join(members) + self.ws() + "}"

    def nested(self, depth):
        """`depth` nested containers around a scalar."""
        r = self.r
        opens, closes = [], []
        for _ in range(depth):
            if r.random() < 0.5:
                opens.append("[")
                closes.append("]")
            else:
                opens.append('{"k":')
                closes.append("}")
        return "".join(opens) + self.scalar() + "".join(reversed(closes))

    def document(self):
        r = self.r
        return self.ws() + self.value(1, [r.randint(1, 40)]) + self.ws()


def refusal_cases(g):
    """Documents that must be refused for one specific reason."""
    r = g.r
    wrap = lambda x: r.choice(["%s", "[%s]", '{"a":%s}', '[1,{"b":[%s]}]']) % x
    out = []
    for bad in ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1.8e308", "-2E+308",
                "179769313486231580793728971405303415079934132710037826936173778980444968292764750041"
                "2873324597315296101013051219346007094862617612823218543447497015919549306458869958968"
                "0.0e200"]:
        out.append(("k", wrap(bad)))
    for d in [MAX_DEPTH + 1, MAX_DEPTH + 2, 200, 1000]:
        out.append(("k", g.nested(d)))
    for s in ['"\\ud800"', '"\\udc00"', '"a\\ud83dx"', '"\\ud83d\\u0041"', '"\\uDFFF\\uD800"']:
        out.append(("k", wrap(s)))
    out.append(("k", wrap("7" * (INT_DIGITS + 1))))
    out.append(("k", wrap("-" + "7" * (INT_DIGITS + 1))))
    return out


def fixed_cases(g):
    """Corners every run covers."""
    docs = ["0", "-0", "1E2", "1.10", "-0.0", "0e0", "1e-400", "-1e-400", "1e16", "1e-5", "100",
            "[]", "{}", "[[]]", '{"":{}}', '""', '"\\u0000\\u001f\\u007f\\u0080\\uffff"',
            '"\\ud83d\\ude00"', '"/\\/"', '{"b":1,"a":2,"b":3}', " [ 1 , 2 ] ", "true", "false", "null",
            '{"\\u00e9":1,"e":2,"\\ud83d\\ude00":3,"\\uffff":4}',
            g.nested(MAX_DEPTH), g.nested(MAX_DEPTH - 1),
            "123456789012345678901234567890", "-123456789012345678901234567890",
            "0.1e1", "1.0000000000000000000000000000001", "2.4703282292062328e-324",
            "2.4703282292062327e-324", "4.9406564584124654e-324", "9007199254740993",
            "9007199254740993.0", "1.7976931348623158e308", "1.7976931348623159e308"]
    return [("k", d) for d in docs]


def mutate(g, text):
    """A damaged copy: cut short, a byte dropped, or a byte inserted."""
    r = g.r
    if not text:
        return text
    i = r.randrange(len(text))
    pick = r.random()
    if pick < 0.4:
        return text[:i]
    if pick < 0.7:
        return text[:i] + text[i + 1:]
    return text[:i] + r.choice('{}[],:"\\0-.eE+ \x01\x7fa') + text[i:]


def main():
    seed, count = int(sys.argv[1]), int(sys.argv[2])
    g = Gen(random.Random(seed))
    cases = fixed_cases(g) + refusal_cases(g)
    while len(cases) < count:
        doc = g.document()
        cases.append(("k", doc))
        if g.r.random() < 0.15:
            cases.append(("e", mutate(g, doc)))
    out = sys.stdout
    for mode, text in cases:
        out.write("%s %s %s\n" % (mode, text.encode("utf-8").hex(), reference(text)))


if __name__ == "__main__":
    main()
