-- GET with the headers an audited API call carries; prints a JSON summary line at the end.
wrk.method = "GET"
wrk.path = "/api/v1/orders/42?page=2"
wrk.headers["user-agent"] = "okhttp/4.12.0"
wrk.headers["tenantId"] = "acme"
wrk.headers["actionLogUserId"] = "user-00042"
wrk.headers["x-request-id"] = "3f1e5b8a-6c2d-4e9f-8a7b-1c2d3e4f5a6b"
wrk.headers["x-b3-traceid"] = "80f198ee56343ba864fe8b2a57d3eff7"

dofile(os.getenv("BENCH_WRK_DONE"))
