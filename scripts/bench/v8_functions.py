"""The filter's wasm instructions per request in V8, by function (`wasm_v8.sh --functions`).

callgrind cannot name V8's JIT code, and attributes a wasm call to the jump-table slot it goes
through, so its own per-function totals are useless there. With `--dump-instr=yes` it keeps
the cost per instruction address, and Node's `--perf-basic-prof` writes where V8 put each
compiled function (`/tmp/perf-<pid>.map`: start, size, name): this joins the two. Two runs (N
and 3N requests) are subtracted, so start-up and compilation drop out.

    python3 v8_functions.py DUMP_N MAP_N DUMP_3N MAP_3N REQUESTS_BETWEEN [TOP]

`--annotate PATTERN DUMP CODE REQUESTS` (`wasm_v8.sh --annotate`): one function's machine code
as V8 compiled it (Node's `--print-wasm-code`, printed by the run callgrind counted, so the
addresses agree) with how many times per request each instruction ran, and how many of the
function's instructions run how often (per member, per object, per byte...).
"""

import bisect
import collections
import re
import subprocess
import sys

import envoy_count


def instruction_costs(lines):
    """Self cost (Ir) per instruction address of a callgrind dump written with
    `--dump-instr=yes`."""
    costs = collections.Counter()
    for _, addr, ir in envoy_count.self_costs(lines):
        costs[addr] += ir
    return costs


def perf_map(lines):
    """Entries (start, size, name) of a `perf-<pid>.map`, sorted by start."""
    entries = []
    for line in lines:
        start, size, name = line.rstrip("\n").split(" ", 2)
        entries.append((int(start, 16), int(size, 16), name))
    entries.sort()
    return entries


def readable(names):
    """V8's names (`JS:<symbol>-<index>-turbofan`) → demangled Rust paths without crate hashes
    (binutils' c++filt reads Rust's v0 symbols); as they are where c++filt is missing."""
    names = list(names)
    bare = [re.sub(r"-\d+-(turbofan|liftoff)$", "", re.sub(r"^JS:", "", n)) for n in names]
    try:
        out = subprocess.run(["c++filt"], input="\n".join(bare) + "\n", capture_output=True,
                             text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        out = bare
    if len(out) != len(bare):
        out = bare
    return {n: re.sub(r"\[[0-9a-f]{1,16}\]", "", d) for n, d in zip(names, out)}


def by_function(runs, requests):
    """Per-request instructions by function name: `runs` is [(costs, map, sign)], the longer
    run with sign +1 and the shorter with -1."""
    totals = collections.Counter()
    for costs, entries, sign in runs:
        starts = [e[0] for e in entries]
        for addr, ir in costs.items():
            i = bisect.bisect_right(starts, addr) - 1
            inside = i >= 0 and addr < entries[i][0] + entries[i][1]
            totals[entries[i][2] if inside else "(V8 runtime and host code)"] += sign * ir
    names = readable(totals)
    per = collections.Counter()
    for name, ir in totals.items():
        per[names[name]] += ir / requests
    return dict(per)


CODE_LINE = re.compile(r"(0x[0-9a-f]+)\s+[0-9a-f]+\s+[0-9a-f]+\s+(.*)$")


def code_listing(lines):
    """{function name: [(address, instruction)]} of V8's `--print-wasm-code` output."""
    listing = {}
    current = None
    for line in lines:
        if line.startswith("name: "):
            current = listing.setdefault(line[6:].strip(), [])
            continue
        m = CODE_LINE.match(line.rstrip("\n"))
        if m and current is not None:
            current.append((int(m.group(1), 16), m.group(2).strip()))
    return listing


def annotate(costs, listing, pattern, requests):
    """(name, [(runs per request, address, instruction)], {runs per request: instructions}) of
    the first function whose readable name contains `pattern`; None when none does."""
    names = readable(listing)
    for raw, code in listing.items():
        # `<a::Canon>::object` is found as `Canon::object` too.
        if (pattern in names[raw] or pattern in re.sub(r"[<>]", "", names[raw])) and code:
            rows = [(costs.get(addr, 0) / requests, addr, text) for addr, text in code]
            often = collections.Counter()
            for runs, _, _ in rows:
                if runs:
                    often[round(runs)] += 1
            return names[raw], rows, dict(often)
    return None


def main_annotate(pattern, dump, code, requests):
    with open(dump) as d, open(code, errors="replace") as c:
        found = annotate(instruction_costs(d), code_listing(c), pattern, float(requests))
    if found is None:
        sys.exit(f"v8_functions: no compiled wasm function matches {pattern!r}")
    name, rows, often = found
    total = sum(runs for runs, _, _ in rows)
    print(f"== {name}: {total:,.0f} instructions per request")
    print("runs/request  instructions  (the function's instructions by how often they run)")
    for runs, n in sorted(often.items(), key=lambda kv: -kv[0] * kv[1])[:12]:
        print(f"{runs:12,}  {n:12,}  = {runs * n:,.0f}")
    for runs, addr, text in rows:
        print(f"{runs:10,.1f}  {addr:x}  {text}")


def main(argv):
    if argv[:1] == ["--annotate"]:
        main_annotate(*argv[1:5])
        return
    dump_a, map_a, dump_b, map_b, requests = argv[:5]
    top = int(argv[5]) if len(argv) > 5 else 25
    runs = []
    for dump, pmap, sign in ((dump_a, map_a, -1), (dump_b, map_b, 1)):
        with open(dump) as d, open(pmap) as m:
            runs.append((instruction_costs(d), perf_map(m), sign))
    per = by_function(runs, float(requests))
    total = sum(per.values())
    print(f"{total:12,.0f}  instructions per request in all")
    for name, ir in sorted(per.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{ir:12,.0f}  {100 * ir / total:5.1f} %  {name}")


if __name__ == "__main__":
    main(sys.argv[1:])
