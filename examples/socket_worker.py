"""A tiny HTTP worker that takes its listening socket from the supervisor.

Socket activation as systemd does it: the socket arrives as fd 3 with
LISTEN_FDS=1 and LISTEN_PID set to our own pid. ``GET /`` answers with the
worker's pid; ``GET /crash`` answers, then exits with code 1 (to exercise
restarts); anything else is a 404. Requests are served one at a time, so a
crash never takes down a connection other than the one that asked for it.
"""

from __future__ import annotations

import os
import socket
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

SD_LISTEN_FDS_START = 3


def inherited_socket() -> socket.socket:
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        sys.exit("LISTEN_PID is not ours: not started by socket activation")
    if int(os.environ.get("LISTEN_FDS", "0")) < 1:
        sys.exit("no socket in LISTEN_FDS")
    return socket.socket(fileno=SD_LISTEN_FDS_START)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        if self.path == "/":
            self._reply(200, f"{os.getpid()}\n".encode())
        elif self.path == "/crash":
            self._reply(200, b"crashing\n")
            self.wfile.flush()
            self.connection.close()
            os._exit(1)
        else:
            self._reply(404, b"not found\n")

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def main() -> None:
    sock = inherited_socket()
    server = HTTPServer(sock.getsockname()[:2], Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.serve_forever()


if __name__ == "__main__":
    main()
