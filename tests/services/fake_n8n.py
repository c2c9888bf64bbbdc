"""A small fake of n8n's public REST API (just what n8n-mcp's workflow tools read), for the n8n
service test. Runs in the python311 base image: python3 fake_n8n.py PORT API_KEY."""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORKFLOW = {
    "id": "mcpctlWf0001",
    "name": "mcpctl fake workflow",
    "active": False,
    "isArchived": False,
    "nodes": [
        {
            "id": "0f5532f9-36ba-4bef-86c7-30d607400b15",
            "name": "Manual Trigger",
            "type": "n8n-nodes-base.manualTrigger",
            "typeVersion": 1,
            "position": [0, 0],
            "parameters": {},
        }
    ],
    "connections": {},
    "settings": {"executionOrder": "v1"},
    "staticData": None,
    "tags": [],
    "createdAt": "2026-01-01T00:00:00.000Z",
    "updatedAt": "2026-01-01T00:00:00.000Z",
    "versionId": "7b3c1e5a-0000-4000-8000-000000000001",
}


class Handler(BaseHTTPRequestHandler):
    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/healthz":
            return self.reply(200, {"status": "ok"})
        if self.headers.get("X-N8N-API-KEY") != API_KEY:
            return self.reply(401, {"message": "unauthorized"})
        if path == "/api/v1/workflows":
            return self.reply(200, {"data": [WORKFLOW], "nextCursor": None})
        if path == f"/api/v1/workflows/{WORKFLOW['id']}":
            return self.reply(200, WORKFLOW)
        if path in ("/api/v1/executions", "/api/v1/tags", "/api/v1/projects", "/api/v1/credentials"):
            return self.reply(200, {"data": [], "nextCursor": None})
        return self.reply(404, {"message": f"not found: {path}"})

    def log_message(self, fmt, *args):
        sys.stderr.write("fake-n8n: " + (fmt % args) + "\n")


if __name__ == "__main__":
    port, API_KEY = int(sys.argv[1]), sys.argv[2]
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
