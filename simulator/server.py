"""The simulator's HTTPS server: HTTP/1.1 keep-alive, TCP_NODELAY, a thread per connection (TLS
handshakes happen in that thread, not in the accept loop), the API under /api2/json and the control
API under /_sim/."""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from . import control
from .agents import Agents
from .api import Api, RawJson
from .auth import Auth, Unauthorized
from .model import ApiError, Cluster

log = logging.getLogger(__name__)
PREFIX = "/api2/json/"
MAX_BODY = 1024 * 1024


class Simulator:
    """One simulated cluster served on one listener, with its faults and request log."""

    def __init__(self, cluster: Cluster, auth: Auth, context: ssl.SSLContext, host: str = "127.0.0.1",
                 port: int = 8006, auth_fail_delay: float = 0.0):
        from .reqlog import RequestLog

        self.cluster = cluster
        self.auth = auth
        self.api = Api(cluster, auth)
        self.requests = RequestLog()
        self.agents: Agents | None = None
        self.api_down: int | None = None
        self.latency = 0.0
        # when set, api_down / latency apply to this HTTP method only (POST: actions fail, reads work)
        self.api_down_method: str | None = None
        self.latency_method: str | None = None
        self.auth_fail_delay = auth_fail_delay
        self.httpd = _Server((host, port), _Handler, self, context)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="sim-http", daemon=True)
        self._thread.start()
        if self.agents:
            self.agents.start()

    def stop(self) -> None:
        if self.agents:
            self.agents.stop()
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def heal(self) -> dict[str, Any]:
        """Switch every fault off: guests recover and unlock, nodes come back, the API answers."""
        c = self.cluster
        with c.lock:
            c.heal_guests()
            for name in c.nodes:
                c.set_node_online(name, True)
            c.set_quorum(None)
            self.api_down = None
            self.latency = 0.0
            self.api_down_method = self.latency_method = None
            self.auth.power_revoked = False
            self.auth.audit_revoked = False
            return control.state_json(self)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512

    def __init__(self, address: tuple[str, int], handler: type, sim: Simulator, context: ssl.SSLContext):
        self.sim = sim
        self.context = context
        super().__init__(address, handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(30)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            log.debug("TLS handshake with %s failed: %s", client_address, exc)
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pve-api-daemon/3.0"
    sys_version = ""
    timeout = 60  # idle keep-alive connections are closed after this
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ApiError(413, "request entity too large")
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        if "json" in (self.headers.get("Content-Type") or ""):
            try:
                data = json.loads(raw)
            except ValueError:
                raise ApiError(400, "Parameter verification failed.", {"body": "invalid JSON"}) from None
            if not isinstance(data, dict):
                raise ApiError(400, "Parameter verification failed.", {"body": "expected a JSON object"})
            return data
        return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))

    def _dispatch(self, method: str) -> None:
        sim = self.server.sim
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        try:
            body = self._body()
        except ApiError as exc:
            self._error(exc)
            return
        if url.path.startswith("/_sim/"):
            try:
                self._json(200, "OK", control.handle(sim, method, url.path[6:].strip("/").split("/"), query, body))
            except ApiError as exc:
                self._json(exc.status, exc.message, {"error": exc.message})
            except (KeyError, ValueError, TypeError) as exc:
                self._json(400, "Bad Request", {"error": f"bad control request: {exc}"})
            return
        if not url.path.startswith(PREFIX):
            self._send(501, "Not Implemented", b"")
            return
        path = url.path[len(PREFIX):].strip("/")
        normalized_query = "&".join(f"{k}={v}" for k, v in sorted(query.items()))
        status, user = self._api(sim, method, path, query, body)
        sim.requests.record(method, "/" + unquote(path), normalized_query, status, user)

    def _api(self, sim: Simulator, method: str, path: str, query: dict[str, str], body: dict[str, Any]
             ) -> tuple[int, str | None]:
        if sim.latency and sim.latency_method in (None, method):
            time.sleep(sim.latency)  # before the call is carried out: a client that gives up still gets it done
        if sim.api_down and sim.api_down_method in (None, method):
            return self._error(ApiError(sim.api_down, "ipcc_send_rec[1] failed: Connection refused")), None
        if method == "POST" and path == "access/ticket":
            try:
                data = sim.auth.login(str(body.get("username", "")), str(body.get("password", "")),
                                      body.get("realm"))
            except ApiError as exc:
                if sim.auth_fail_delay:
                    time.sleep(sim.auth_fail_delay)
                return self._error(exc), None
            data["clustername"] = sim.cluster.name
            self._json(200, "OK", {"data": data})
            return 200, str(data["username"])
        try:
            identity = sim.auth.authenticate(self.headers.get("Authorization"), self.headers.get("Cookie"),
                                             self.headers.get("CSRFPreventionToken"), method)
        except Unauthorized as exc:
            if sim.auth_fail_delay:
                time.sleep(sim.auth_fail_delay)
            self._send(401, str(exc), b"")
            return 401, None
        try:
            data = sim.api.handle(identity, method, path, query, body)
        except ApiError as exc:
            if exc.delay:  # e.g. agent/ping waiting for a guest agent that never answers; the lock is released
                time.sleep(exc.delay)
            return self._error(exc), identity.userid
        if isinstance(data, RawJson):
            self._send(200, "OK", b'{"data":' + data.encoded + b"}")
        else:
            self._json(200, "OK", {"data": data})
        return 200, identity.userid

    def _error(self, exc: ApiError) -> int:
        if exc.status >= 590:  # a proxied call to a node that is down: no JSON body
            self._send(exc.status, exc.message, b"")
            return exc.status
        message = exc.message if exc.status == 501 else exc.message + "\n"
        body: dict[str, Any] = {"data": None, "message": message}
        if exc.errors:
            body["errors"] = exc.errors
        self._json(exc.status, exc.message.splitlines()[0], body)
        return exc.status

    def _json(self, status: int, reason: str, payload: Any) -> None:
        self._send(status, reason, json.dumps(payload, separators=(",", ":")).encode())

    def _send(self, status: int, reason: str, body: bytes) -> None:
        self.send_response(status, reason.replace("\r", " ").replace("\n", " "))
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=0")
        self.send_header("Pragma", "no-cache")
        self.end_headers()
        self.wfile.write(body)
