"""Unit tests of the harness's pure parts (run by `scripts/bench.sh --smoke`)."""

import json
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bootstraps  # noqa: E402
import envoy_count  # noqa: E402
import report  # noqa: E402
import run  # noqa: E402
import v8_functions  # noqa: E402

PATHS = {"meshaudit": "/m.wasm", "access_log": "/a.log", "floor_empty": "/e.wasm", "floor_trivial": "/t.wasm"}


def http_filters(cfg):
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return [f["name"] for f in hcm["http_filters"]], hcm


class Bootstraps(unittest.TestCase):
    def test_every_variant_ends_in_the_router_and_answers_directly(self):
        for v in bootstraps.VARIANTS:
            names, hcm = http_filters(bootstraps.variant_bootstrap(v, (1, 2), PATHS, 3))
            self.assertEqual(names[-1], "envoy.filters.http.router", v)
            route = hcm["route_config"]["virtual_hosts"][0]["routes"][0]
            self.assertEqual(route["direct_response"]["status"], 200, v)

    def test_post_variants_buffer_and_meshaudit_uses_only_spec_keys(self):
        names, _ = http_filters(bootstraps.variant_bootstrap("meshaudit_bodies", (1, 2), PATHS, 3))
        self.assertEqual(names, ["envoy.filters.http.wasm", "envoy.filters.http.buffer", "envoy.filters.http.router"])
        names, _ = http_filters(bootstraps.variant_bootstrap("bare_post", (1, 2), PATHS, 3))
        self.assertEqual(names, ["envoy.filters.http.buffer", "envoy.filters.http.router"])
        cfg = bootstraps.variant_bootstrap("meshaudit_bodies", (1, 2), PATHS, 3)
        _, hcm = http_filters(cfg)
        wasm = hcm["http_filters"][0]["typed_config"]["config"]
        plugin = json.loads(wasm["configuration"]["value"])
        self.assertEqual(plugin, {"collector_cluster": "meshaudit_collector", "capture_bodies": True})
        self.assertIn("AUDIT_FORWARD_SIGNING_SECRET", wasm["vm_config"]["environment_variables"]["host_env_keys"])
        self.assertEqual(cfg["static_resources"]["clusters"][0]["name"], "meshaudit_collector")

    def test_the_sink_takes_whole_batches(self):
        _, hcm = http_filters(bootstraps.variant_bootstrap("sink", (1, 2), PATHS, None))
        self.assertEqual(hcm["http_filters"][0]["typed_config"]["max_request_bytes"], 4 * 1024 * 1024)

    def test_access_log_variant_logs_json_to_the_file(self):
        _, hcm = http_filters(bootstraps.variant_bootstrap("access_log", (1, 2), PATHS, 3))
        log = hcm["access_log"][0]["typed_config"]
        self.assertEqual(log["path"], "/a.log")
        self.assertIn("json_format", log["log_format"])


def rnd(rps, cpu):
    return {"rps": rps, "p50_us": 1000, "p99_us": 2000, "cpu_us_per_req": cpu, "cpu_util": 1.0}


class Report(unittest.TestCase):
    def test_envoy_ratios_use_medians_and_the_right_baseline(self):
        s = report.summarise_envoy({
            "bare": [rnd(100, 10), rnd(80, 12), rnd(90, 11)],
            "access_log": [rnd(45, 20)],
            "trivial_wasm": [rnd(60, 15)],
            "meshaudit": [rnd(54, 18)],
            "bare_post": [rnd(50, 20)],
            "meshaudit_bodies": [rnd(40, 25)],
        })
        self.assertEqual(s["bare"]["rps"], 90)
        self.assertAlmostEqual(s["meshaudit"]["vs_bare"], 0.6)
        self.assertAlmostEqual(s["meshaudit"]["vs_access_log"], 1.2)
        self.assertAlmostEqual(s["meshaudit"]["vs_trivial_wasm"], 0.9)
        self.assertAlmostEqual(s["meshaudit"]["cpu_vs_bare"], 11 / 18)
        self.assertAlmostEqual(s["meshaudit_bodies"]["vs_bare"], 0.8)
        self.assertIn("| 0.60 |", report.markdown({"envoy_summary": s}))

    def test_the_log_part_has_its_own_tables(self):
        # `--only log` once wrote an empty latest-log.md: markdown() knew no log results.
        md = report.markdown({
            "log_ingest": {"sqlite": {"tree_on": 900.0, "tree_off": 1000.0, "ratio_of_medians": 0.9,
                                      "ratio_per_round": [0.85, 0.95]}},
            "log_proofs": {"tree_size": 1000, "runs": [{"phase": "quiet", "kind": "inclusion", "requests": 10,
                                                        "p50_ms": 0.5, "p99_ms": 1.25, "max_ms": 2.0}]},
        })
        self.assertIn("| sqlite | 900 | 1,000 | 0.90 | 0.85, 0.95 | ≥ 0.90 |", md)
        self.assertIn("| quiet | inclusion | 10 | 0.5 | 1.2 | 2.0 |", md)

    def test_the_contract_floor_adds_this_runs_prices(self):
        def cpu(us):
            return {"cpu_us_per_req": us}

        def op(us):
            return {"us_per_op": us, "cpu_us_per_req": 0.0, "ops_per_req": 10}
        results = {
            "envoy_summary": {"bare": cpu(20.0), "empty_wasm": cpu(25.0), "bare_post": cpu(22.0),
                              "meshaudit_sink": cpu(60.0), "meshaudit_bodies_sink": cpu(130.0)},
            "hostcalls": {"6 get_property (on_log set)": op(12.0), "all of the above, once": op(30.0),
                          "SHA-256 of 4 KiB": op(30.0), "read the 4 KiB request body": op(2.0)},
        }
        f = report.contract_floor(results)
        # empty 25 + the reads and the hash made once 30, less 2 of the 6 properties 4
        self.assertAlmostEqual(f["meshaudit_sink"]["floor_us"], 51.0)
        self.assertAlmostEqual(f["meshaudit_sink"]["target_us"], 20.0 / 0.55)
        # bare POST 22 + the empty filter's 5 + reads and hash 26 + body read 2 + two 4 KiB hashes 60
        self.assertAlmostEqual(f["meshaudit_bodies_sink"]["floor_us"], 115.0)
        self.assertIn("| 51.0 | 60.0 | +9.0 |", "\n".join(report.floor_markdown(results)))
        # Every price the floor needs is one the hostcalls part measures.
        self.assertLessEqual(set(report.FLOOR_PROBES.values()), {label for label, *_ in run.Bench.PROBES})
        # A subset run without the hostcall prices has no floor, and no table.
        del results["hostcalls"]
        self.assertIsNone(report.contract_floor(results))
        self.assertEqual(report.floor_markdown(results), [])

    def test_collector_fractions_of_each_ceiling(self):
        def run(rate, key):
            return {key: rate, "batch": {"p99_ms": 5.0}}
        s = report.summarise_collector({
            "collector_postgres": [run(5000, "events_per_s")],
            "ceiling_postgres_insert": [run(10000, "rows_per_s")],
            "ceiling_postgres_copy": [run(20000, "rows_per_s")],
            "collector_sqlite": [run(3000, "events_per_s")],
            "ceiling_sqlite_insert": [run(12000, "rows_per_s")],
        })
        self.assertAlmostEqual(s["collector_postgres"]["vs_insert"], 0.5)
        self.assertAlmostEqual(s["collector_postgres"]["vs_copy"], 0.25)
        self.assertAlmostEqual(s["collector_sqlite"]["vs_insert"], 0.25)
        self.assertIsNone(s["collector_sqlite"]["vs_copy"])



class RetryStart(unittest.TestCase):
    def test_retries_a_process_that_exited_early_then_gives_up(self):
        import run
        from procs import ExitedEarly

        class Stub:
            procs = []
            retry_start = run.Bench.retry_start

        calls = []

        def flaky():
            calls.append(1)
            if len(calls) < 3:
                raise ExitedEarly("envoy exited with 1")
            return "started"

        self.assertEqual(Stub().retry_start(flaky), "started")
        self.assertEqual(len(calls), 3)

        def always():
            raise ExitedEarly("envoy exited with 1")

        with self.assertRaises(ExitedEarly):
            Stub().retry_start(always)


# A callgrind dump in the compressed form valgrind writes: names defined once as `(id) name`
# and referred to as `(id)`; the line after `calls=` is the callee's inclusive cost.
CALLGRIND_DUMP = """# callgrind format
version: 1
events: Ir
summary: 1000

ob=(1) /opt/envoy/_bin/envoy
fl=(1) ???
fn=(1) 0x0000000004de9450
0 100
cob=(2) ???
cfn=(2) 0x00003382170044b8
calls=3 0
0 700
0 50

ob=(2)
fn=(2)
0 600
cob=(3) /usr/lib/x86_64-linux-gnu/libc.so.6
cfn=(3) memcpy
calls=1 0
0 100

ob=(3)
fn=(3)
0 100
ob=(1)
fn=(1)
+2 150
"""


class EnvoyCount(unittest.TestCase):
    def test_self_cost_by_object_skips_the_callees_inclusive_cost(self):
        totals = envoy_count.parse_callgrind(CALLGRIND_DUMP.splitlines(True))
        self.assertEqual(totals, {"envoy": 300, "(unmapped)": 600, "libc.so.6": 100})
        self.assertEqual(sum(totals.values()), 1000)  # the dump's summary
        self.assertEqual(envoy_count.per_request(totals, 10),
                         {"total": 100.0, "envoy": 30.0, "unmapped": 60.0, "libc": 10.0, "other": 0.0})

    def test_requests_are_wrk_scripts_byte_for_byte(self):
        lua = (Path(__file__).resolve().parent / "wrk_get.lua").read_text()
        get = envoy_count.request_bytes("get", "127.0.0.1:8")
        self.assertTrue(get.startswith(b"GET /api/v1/orders/42?page=2 HTTP/1.1\r\nHost: 127.0.0.1:8\r\n"))
        self.assertTrue(get.endswith(b"\r\n\r\n"))
        for name, value in envoy_count.GET_HEADERS:
            self.assertIn(f'wrk.headers["{name}"] = "{value}"', lua)
            self.assertIn(f"{name}: {value}\r\n".encode(), get)
        post = envoy_count.request_bytes("post", "h")
        head, _, body = post.partition(b"\r\n\r\n")
        self.assertEqual(len(body), 4096)
        self.assertIn(b"Content-Length: 4096", head)
        self.assertTrue(body.startswith(b'{"order":{"id":"ord-42","customer":"user-00042","items":[{"sku":"SKU-00001",'))
        json.loads(body)  # valid JSON, padded with spaces as wrk_post.lua pads it

    def test_the_count_table_gives_ratios_to_bare_and_probe_prices(self):
        items = {"bare": {"total": 100_000.0, "envoy": 90_000.0, "unmapped": 5_000.0, "libc": 5_000.0},
                 "meshaudit_sink": {"total": 250_000.0, "envoy": 120_000.0, "unmapped": 120_000.0,
                                    "libc": 10_000.0},
                 "probe: (nothing)": {"total": 110_000.0, "ops_per_req": 1, "per_op": 0.0},
                 "probe: get_property": {"total": 200_000.0, "ops_per_req": 10, "per_op": 9_000.0}}
        md = "\n".join(report.count_markdown({"count": {"warmup": 10, "requests": 20, "items": items}}))
        self.assertIn("| meshaudit_sink | 250,000 | 0.40 | 120,000 | 120,000 | 10,000 |", md)
        self.assertIn("| get_property | 10 | 200,000 | +9,000 |", md)
        self.assertEqual(report.count_markdown({}), [])

    def test_the_floor_in_instructions_uses_the_timed_floors_formula(self):
        items = {"bare": {"total": 100_000.0}, "empty_wasm": {"total": 110_000.0},
                 "meshaudit_sink": {"total": 300_000.0},
                 "probe: all of the above, once": {"total": 0.0, "per_op": 120_000.0},
                 "probe: 6 get_property (on_log set)": {"total": 0.0, "per_op": 60_000.0}}
        floor = report.count_floor({"count": {"items": items}})
        # 110,000 (empty filter) + 120,000 (everything once) − 2 × 10,000 (two of the six properties)
        self.assertEqual(floor["meshaudit_sink"]["floor_us"], 210_000.0)
        self.assertAlmostEqual(floor["meshaudit_sink"]["target_us"], 100_000 / 0.55)
        self.assertNotIn("meshaudit_bodies_sink", floor)  # no body prices in this run
        del items["empty_wasm"]
        self.assertIsNone(report.count_floor({"count": {"items": items}}))


# `--dump-instr=yes`: positions are instruction addresses, absolute or relative to the last.
INSTR_DUMP = """positions: instr line
events: Ir
fn=(1) 0x1000
0x1000 0 5
+4 0 7
cfn=(2) 0x2000
calls=1 0x2000 0
+2 0 900
+3 0 11
fn=(2)
0x2000 0 100
-4080 0 3
"""
PERF_MAP = ["1000 20 JS:_RNvNtCsjabKSZNdT4j_15meshaudit_event9canonical12write_string-266-turbofan\n",
            "2000 10 JS:memcmp-595-turbofan\n"]


class V8Functions(unittest.TestCase):
    def test_instruction_costs_follow_relative_addresses_and_skip_calls(self):
        costs = v8_functions.instruction_costs(INSTR_DUMP.splitlines(True))
        self.assertEqual(costs, {0x1000: 5, 0x1004: 7, 0x1009: 11, 0x2000: 100, 0x1010: 3})

    def test_costs_are_named_by_the_perf_map_and_runs_subtracted(self):
        longer = v8_functions.instruction_costs(INSTR_DUMP.splitlines(True))
        shorter = {0x1000: 5, 0x2000: 20}
        entries = v8_functions.perf_map(PERF_MAP)
        per = v8_functions.by_function([(shorter, entries, -1), (longer, entries, 1)], 2)
        # 0x1000..0x101f is write_string (0x1010 included), 0x2000..0x2009 memcmp.
        self.assertEqual(per, {"meshaudit_event::canonical::write_string": (7 + 11 + 3) / 2,
                               "memcmp": 80 / 2})
        per = v8_functions.by_function([({0x5000: 8}, entries, 1)], 1)
        self.assertEqual(per, {"(V8 runtime and host code)": 8})

    def test_annotate_lists_one_function_with_runs_per_request(self):
        code = ["name: _RNvNtCsjabKSZNdT4j_15meshaudit_event9canonical12write_string\n",
                "index: 266\n", "kind: wasm function\n",
                "Instructions (size = 12)\n",
                "0x1000     0  55                   push rbp\n",
                "0x1004     4  4889e5               REX.W movq rbp,rsp\n",
                "0x1009     9  c3                   retl\n",
                "name: memcmp\n",
                "0x2000     0  c3                   retl\n"]
        listing = v8_functions.code_listing(code)
        self.assertEqual(listing["memcmp"], [(0x2000, "retl")])
        costs = v8_functions.instruction_costs(INSTR_DUMP.splitlines(True))
        name, rows, often = v8_functions.annotate(costs, listing, "write_string", 1)
        self.assertEqual(name, "meshaudit_event::canonical::write_string")
        self.assertEqual(rows, [(5, 0x1000, "push rbp"), (7, 0x1004, "REX.W movq rbp,rsp"),
                                (11, 0x1009, "retl")])
        self.assertEqual(often, {5: 1, 7: 1, 11: 1})
        self.assertIsNone(v8_functions.annotate(costs, listing, "no_such_fn", 1))
        listing = {"_RNvMs0_NtCsjabKSZNdT4j_15meshaudit_event6streamNtB5_5Canon6object":
                   [(0x1000, "push rbp")]}
        name, _, _ = v8_functions.annotate(costs, listing, "Canon::object", 1)
        self.assertEqual(name, "<meshaudit_event::stream::Canon>::object")


if __name__ == "__main__":
    unittest.main()
