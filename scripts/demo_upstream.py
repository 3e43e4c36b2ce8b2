"""The demo's sample app: a tiny JSON API on 127.0.0.1:PORT (stdlib only).

GET /orders/<id> -> the order; POST /orders -> 201 with the order; /status/<code> -> that status.
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class App(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        if path.startswith("/status/"):
            code = int(path.split("/")[2])
            return self._answer(code, {"status": code})
        if self.command == "POST" and path == "/orders":
            order = json.loads(body or b"{}")
            order["id"] = "ord-1001"
            return self._answer(201, order)
        if path.startswith("/orders/"):
            return self._answer(200, {"id": path.split("/")[2], "item": "book", "qty": 1})
        return self._answer(404, {"error": "not found"})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _route

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), App).serve_forever()
