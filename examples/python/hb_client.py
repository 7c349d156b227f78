"""A client for the hb broker, standard library only.

The broker speaks HTTP/1.1 + JSON on a Unix socket (default /run/hb/broker.sock, or
$HB_BROKER_SOCKET). Who you are is decided by the kernel (your process's cgroup), not
by anything you send, so there is nothing to configure but the socket path.

    from hb_client import Client, BrokerError
    hb = Client()
    h = hb.handle("github", "ci-bot")            # {"handle": "hb_cred_…", "execution": …}
    r = hb.request("GET", "https://api.github.com/user", handle=h["handle"])
    print(r["status"], r["body"])                 # secrets in the body are redacted
    hb.end_execution(h["execution"], "done")     # every handle of the run dies

Errors raise BrokerError with .status, .code (stable: policy_denied, unknown_handle,
auth_collision, binding_missing, dns_rejected, …) and .message (says which rule).
Run `python3 hb_client.py --help` for the command-line form.
"""

import http.client
import json
import os
import socket
import sys
import urllib.parse

DEFAULT_SOCKET = "/run/hb/broker.sock"


class BrokerError(Exception):
    def __init__(self, status, code, message):
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("hb", timeout=timeout)
        self._path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class Client:
    """One keep-alive connection to the broker; not for use by several threads at once."""

    def __init__(self, socket_path=None, timeout=60):
        self.socket_path = socket_path or os.environ.get("HB_BROKER_SOCKET", DEFAULT_SOCKET)
        self.timeout = timeout
        self._conn = None

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def call(self, method, path, body=None, token=None):
        """One request; the decoded JSON answer (None for 204), or BrokerError."""
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = _UnixConnection(self.socket_path, self.timeout)
            try:
                self._conn.request(method, path, body=data, headers=headers)
                resp = self._conn.getresponse()
                raw = resp.read()
                break
            except (ConnectionError, http.client.HTTPException):
                # The broker closed an idle keep-alive connection: reconnect once.
                self.close()
                if attempt:
                    raise
        if resp.status == 204:
            return None
        try:
            answer = json.loads(raw) if raw else None
        except ValueError:
            answer = None
        if resp.status >= 400:
            err = (answer or {}).get("error", {}) if isinstance(answer, dict) else {}
            raise BrokerError(resp.status, err.get("code", "unknown"), err.get("message", raw.decode(errors="replace")))
        return answer

    def whoami(self):
        return self.call("GET", "/v1/whoami")

    def handle(self, integration, account, execution=None):
        body = {"integration": integration, "account": account}
        if execution is not None:
            body["execution"] = execution
        return self.call("POST", "/v1/handles", body)

    def handles(self):
        """Every live handle this caller holds (and any decoys its policy planted beside them)."""
        return self.call("GET", "/v1/handles")["handles"]

    def delete_handle(self, handle):
        return self.call("DELETE", "/v1/handles/" + urllib.parse.quote(handle, safe=""))

    def end_execution(self, execution, outcome=None):
        body = {} if outcome is None else {"outcome": outcome}
        return self.call("POST", "/v1/executions/" + urllib.parse.quote(execution, safe="") + "/end", body)

    def request(self, method, url, handle=None, headers=None, body=None, body_base64=None, sanitize=None):
        req = {"method": method, "url": url}
        if handle is not None:
            req["handle"] = handle
        if headers:
            req["headers"] = headers
        if body is not None:
            req["body"] = body
        if body_base64 is not None:
            req["body_base64"] = body_base64
        if sanitize is not None:
            req["sanitize"] = sanitize
        return self.call("POST", "/v1/requests", req)

    def scrub(self, text):
        return self.call("POST", "/v1/scrub", {"text": text})

    def sanitize(self, text, mode=None, spotlight=False):
        body = {"text": text}
        if mode is not None:
            body["mode"] = mode
        if spotlight:
            body["spotlight"] = True
        return self.call("POST", "/v1/sanitize", body)


USAGE = """usage: hb_client.py [--socket PATH] COMMAND [ARGS]

commands:
  whoami                                  how the broker sees this process
  handle INTEGRATION ACCOUNT [EXECUTION]  get a handle (printed as JSON)
  request METHOD URL [HANDLE]             make a call through the broker
  delete HANDLE                           revoke a handle
  end EXECUTION [OUTCOME]                 revoke every handle of an execution
  scrub                                   stdin -> redacted text on stdout
  sanitize [MODE]                         stdin -> sanitized result as JSON

examples:
  python3 hb_client.py whoami
  H=$(python3 hb_client.py handle github ci-bot | python3 -c 'import json,sys; print(json.load(sys.stdin)["handle"])')
  python3 hb_client.py request GET https://api.github.com/user "$H"
  some-tool | python3 hb_client.py scrub
"""


def main(argv):
    args = list(argv)
    path = None
    if args[:1] == ["--socket"] and len(args) >= 2:
        path, args = args[1], args[2:]
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    hb = Client(path)
    cmd, rest = args[0], args[1:]
    try:
        if cmd == "whoami":
            out = hb.whoami()
        elif cmd == "handle" and len(rest) in (2, 3):
            out = hb.handle(*rest)
        elif cmd == "request" and len(rest) in (2, 3):
            out = hb.request(rest[0], rest[1], handle=rest[2] if len(rest) == 3 else None)
        elif cmd == "delete" and len(rest) == 1:
            out = hb.delete_handle(rest[0])
        elif cmd == "end" and len(rest) in (1, 2):
            out = hb.end_execution(*rest)
        elif cmd == "scrub" and not rest:
            sys.stdout.write(hb.scrub(sys.stdin.read())["text"])
            return 0
        elif cmd == "sanitize" and len(rest) <= 1:
            out = hb.sanitize(sys.stdin.read(), mode=rest[0] if rest else None)
        else:
            print(USAGE, file=sys.stderr)
            return 2
    except BrokerError as e:
        print(json.dumps({"error": {"status": e.status, "code": e.code, "message": e.message}}), file=sys.stderr)
        return 1
    if out is not None:
        print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
