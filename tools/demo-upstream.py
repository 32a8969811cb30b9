#!/usr/bin/env python3
"""A tiny HTTPS server for the demo: it requires a client certificate signed
by the demo CA and answers every request with a JSON echo of what it got
(method, path, headers in wire order, body, and the client's identity).

    tools/demo-upstream.py --port 18443 --tls-dir conf/tls

TLS files in --tls-dir: ca.pem (trusted for client certs), upstream.pem and
upstream.key (this server's certificate), as tools/demo-certs makes them.
"""

import argparse
import json
import os
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def identity(cert):
    """(first URI SAN, else first DNS SAN, else None), subject CN, SANs."""
    sans = cert.get("subjectAltName", ()) if cert else ()
    uris = [v for k, v in sans if k == "URI"]
    dns = [v for k, v in sans if k == "DNS"]
    subject = dict(kv for rdn in (cert or {}).get("subject", ()) for kv in rdn)
    return {"identity": (uris + dns + [None])[0], "subject_cn": subject.get("commonName"),
            "uri_sans": uris, "dns_sans": dns}


class EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ferry-demo-upstream"

    def echo(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        answer = {
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": body.decode("utf-8", "replace"),
            "tls_version": self.connection.version(),
            "client_cert": identity(self.connection.getpeercert()),
        }
        data = json.dumps(answer).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = echo

    def log_message(self, fmt, *args):
        sys.stderr.write("demo-upstream: %s %s\n" % (self.address_string(), fmt % args))


class TLSServer(ThreadingHTTPServer):
    """Handshakes in the connection's own thread, so a slow or broken
    client does not hold up the others."""
    daemon_threads = True

    def __init__(self, address, ctx):
        super().__init__(address, EchoHandler)
        self.ctx = ctx

    def finish_request(self, request, client_address):
        request.settimeout(30)
        try:
            tls = self.ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            sys.stderr.write("demo-upstream: %s: TLS handshake failed: %s\n" % (client_address[0], e))
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=18443)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--tls-dir", required=True)
    args = ap.parse_args()

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(args.tls_dir, "upstream.pem"),
                        os.path.join(args.tls_dir, "upstream.key"))
    ctx.load_verify_locations(os.path.join(args.tls_dir, "ca.pem"))
    ctx.verify_mode = ssl.CERT_REQUIRED

    server = TLSServer((args.host, args.port), ctx)
    sys.stderr.write("demo-upstream: https://%s:%d (client certificate required)\n"
                     % (args.host, args.port))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
