"""Prints the demo's stored events (GET /v1/events JSON on stdin) as a table, then one in full."""
import json
import sys

items = json.load(sys.stdin)["events"]
for it in items:
    e = it["event"]
    k = e.get("kubernetes", {})
    a = e.get("action", {})
    status = e.get("http", {}).get("statuscode", "?")
    pod = "%s/%s" % (k.get("namespacename", "?"), k.get("podname", "?"))
    print("  seq=%-3s %-6s %-14s %-4s %-8s pod=%s verified=%s" % (
        it["seq"], e.get("httpmethod", "?"), a.get("name", "?"), status,
        a.get("severity", "?"), pod, it["verified"]))
print("  %d events stored" % len(items))
posts = [it for it in items if it["event"].get("httpmethod") == "POST"]
if items:
    shown = (posts or items)[0]
    print("  one event in full (seq %s):" % shown["seq"])
    for line in json.dumps(shown["event"], indent=2, sort_keys=True).splitlines():
        print("    " + line)
