"""A strict stand-in for the HTTP Transmissions API (PowerMTA 5 / SparkPost) on 127.0.0.1, over TLS,
for the API route's tests. It enforces ../shared/API-FORMAT.md and stores each accepted
transmission (the request body) as one file in DIR/mail before it answers 200.

usage: api_server.py PORT DIR CERT KEY API_KEY FLAVOR

Behaviour on demand, from DIR/control.json (re-read for every request; missing = all normal):
  "status": N            answer every request with N (401, 503 ...)
  "fail_first": N        the first N requests get "fail_status" (default 503)
  "rate_limit": N        the next N requests get 429 with "Retry-After: <retry_after>"
  "refuse_campaign": S   400 for a transmission whose campaign_id is S
  "refuse_recipient": S  400 for a transmission with S among its recipients
  "reject_recipient": S  200 with that recipient counted as rejected
  "hang": true           read the request, never answer
  "hold": N              store every accepted transmission, answer only the first N stored
DIR/requests.log: "<monotonic time> <status> <connection number>" per request;
DIR/violations.log: every breach of the contract (also answered 400).
Prints "ready" once it listens; stops on SIGTERM.
"""
import http.server
import json
import os
import signal
import ssl
import sys
import threading
import time

PORT, DIR, CERT, KEY, API_KEY, FLAVOR = sys.argv[1:7]
PORT = int(PORT)
MAIL = os.path.join(DIR, "mail")
os.makedirs(MAIL, exist_ok=True)
lock = threading.Lock()
state = {"requests": 0, "connections": 0, "stored": len(os.listdir(MAIL))}


def control():
    try:
        with open(os.path.join(DIR, "control.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def append(name, line):
    with lock, open(os.path.join(DIR, name), "a") as f:
        f.write(line + "\n")


def check(body):
    """The contract's request shape; returns the reason it is refused, or None."""
    try:
        t = json.loads(body)
    except ValueError:
        return "body is not JSON"
    if not isinstance(t, dict):
        return "body is not one JSON object"
    allowed = {"return_path", "campaign_id", "recipients", "options", "content"}
    extra = set(t) - allowed
    if extra:
        return "unsupported field(s): %s" % sorted(extra)
    if not isinstance(t.get("return_path"), str):
        return "return_path is required"
    if "campaign_id" in t and not isinstance(t["campaign_id"], str):
        return "campaign_id must be a string"
    rcpts = t.get("recipients")
    if not isinstance(rcpts, list) or not rcpts:
        return "recipients must be a non-empty list"
    for r in rcpts:
        if not isinstance(r, dict) or set(r) != {"address"}:
            return "a recipient must be {\"address\": ...}"
        a = r["address"]
        if isinstance(a, dict):
            if set(a) != {"email"} or not isinstance(a["email"], str):
                return "address object must hold only email"
            a = a["email"]
        if not isinstance(a, str) or "@" not in a:
            return "bad address %r" % (a,)
    content = t.get("content")
    if not isinstance(content, dict) or set(content) != {"email_rfc822"}:
        return "content must hold email_rfc822 alone"
    msg = content["email_rfc822"]
    if not isinstance(msg, str) or "\r\n\r\n" not in msg:
        return "email_rfc822 is not a message"
    if "\n" in msg.replace("\r\n", ""):
        return "email_rfc822 has a bare LF"
    options = t.get("options")
    if FLAVOR == "powermta":
        if options is not None:
            if not isinstance(options, dict) or set(options) - {"smtputf8"}:
                return "PowerMTA accepts no option but smtputf8"
            if not isinstance(options.get("smtputf8", True), bool):
                return "smtputf8 must be a boolean"
    else:
        if not isinstance(options, dict):
            return "tracking is on by default: it would break the signature"
        if options.get("open_tracking") is not False or options.get("click_tracking") is not False:
            return "open and click tracking must be off for a signed message"
    return None


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        with lock:
            state["connections"] += 1
            self.conn_no = state["connections"]

    def reply(self, status, obj, headers=()):
        data = json.dumps(obj).encode()
        append("requests.log", "%f %d %d" % (time.monotonic(), status, self.conn_no))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, message, headers=()):
        self.reply(status, {"errors": [{"message": message, "code": str(status)}]}, headers)

    def do_GET(self):
        self.error(405, "method not allowed")

    do_PUT = do_DELETE = do_GET

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        c = control()
        with lock:
            state["requests"] += 1
            n = state["requests"]
        if c.get("hang"):
            while control().get("hang"):
                time.sleep(0.05)
            self.close_connection = True
            return
        if self.path != "/api/v1/transmissions":
            return self.error(404, "no such path")
        if self.headers.get("Authorization") != API_KEY:
            return self.error(401, "Unauthorized: bad or missing API key")
        if "status" in c:
            return self.error(c["status"], "answering %d on demand" % c["status"])
        fail_first = c.get("fail_first", 0)
        if n <= fail_first:
            return self.error(c.get("fail_status", 503), "Service Unavailable (on demand)")
        if n <= fail_first + c.get("rate_limit", 0):
            return self.error(429, "Too many requests",
                              [("Retry-After", str(c.get("retry_after", 1)))])
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        why = check(body) if ctype == "application/json" else "Content-Type must be application/json"
        if why:
            append("violations.log", why)
            return self.error(400, why)
        t = json.loads(body)
        if c.get("refuse_campaign") and t.get("campaign_id") == c["refuse_campaign"]:
            return self.error(400, "campaign %s refused on demand" % t["campaign_id"])
        if c.get("refuse_recipient") and c["refuse_recipient"] in [
                r["address"]["email"] if isinstance(r["address"], dict) else r["address"]
                for r in t["recipients"]]:
            return self.error(400, "recipient %s refused on demand" % c["refuse_recipient"])
        with lock:
            state["stored"] += 1
            seq = state["stored"]
            name = "%06d-%d.json" % (seq, os.getpid())
            tmp = os.path.join(MAIL, "." + name)
            with open(tmp, "wb") as f:
                f.write(body)
            os.rename(tmp, os.path.join(MAIL, name))
        while seq > control().get("hold", seq):
            time.sleep(0.01)
        emails = [r["address"]["email"] if isinstance(r["address"], dict) else r["address"]
                  for r in t["recipients"]]
        rejected = sum(1 for e in emails if e == c.get("reject_recipient"))
        results = {"total_accepted_recipients": len(emails) - rejected,
                   "total_rejected_recipients": rejected}
        if FLAVOR != "powermta":
            results["id"] = str(seq)
        self.reply(200, {"results": results})


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


server = Server(("127.0.0.1", PORT), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(CERT, KEY)
server.socket = context.wrap_socket(server.socket, server_side=True)
signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=server.shutdown).start())
print("ready", flush=True)
server.serve_forever()
