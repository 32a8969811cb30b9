"""Integration test harness for ferry (python3 stdlib only).

Tests start the real ferry binary (env FERRY_BIN, default build/ferry) on
loopback, put real upstreams behind it and assert on what crossed the wire.

    PKI            throwaway CA and certificates made with the openssl CLI
    free_port      a free loopback port (tests run in parallel: no fixed ports)
    Upstream       threaded HTTP/1.1 (+TLS/mTLS) server recording every request,
                   answering with a behaviour (echo, fixed, delay, reset, ...)
    Blackhole      a listener whose accept queue is full: connect() hangs
    Ferry          writes the YAML config, runs ferry, stops it, crash canary
    RawClient      exact bytes in, a parsed HTTP/1.1 response out
    request        convenience client over http.client
    FerryTestCase  unittest base class tying the above together

Every socket operation has a timeout; only loopback addresses are used.
"""

import atexit
import base64
import fcntl
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from dataclasses import dataclass, field

LOOPBACK = "127.0.0.1"
IO_TIMEOUT = 3.0          # default for every socket operation
HANDSHAKE_TIMEOUT = 15.0   # an upstream's TLS handshake (see Upstream._serve)
START_TIMEOUT = 10.0      # ferry must answer /healthz within this
STOP_GRACE = 3.0          # beyond drain_timeout before SIGKILL

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def ferry_bin():
    return os.environ.get("FERRY_BIN") or os.path.join(REPO, "build", "ferry")


# ---------------------------------------------------------------------------
# small utilities


_ports_given = set()


def counter(f, name, **labels):
    """The value of one series of /metrics (0 when absent)."""
    text = f.admin("/metrics").body.decode()
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)\{(.*)\} (\S+)$", line)
        if m and m.group(1) == name and \
                ",".join(sorted(m.group(2).split(","))) == want:
            return float(m.group(3))
    return 0.0


def need_python_h2():
    """Makes python3-h2 importable: this python's own, else Debian's (pure
    Python, for the system python3); exits 77 (meson: skipped) without."""
    try:
        import h2  # noqa: F401
    except ImportError:
        sys.path.append("/usr/lib/python3/dist-packages")
        try:
            import h2  # noqa: F401,F811
        except ImportError as e:
            print("SKIP: %s (install python3-h2)" % e)
            sys.exit(77)


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# the lower half of the 20000 ports below the ephemeral range; the Node
# tests (tests/e2e/helpers.mjs) pick in the upper half
_PORT_RANGE = (max(1024, _ephemeral_low() - 20000), _ephemeral_low() - 10000)
_port_rng = random.Random()
_port_lock_fd = None


def _reserve_port(port):
    """Holds PORT for this process against every other test process on the
    machine: a POSIX lock on byte PORT of one shared file, released when
    the process ends. Two suites running at once (meson runs two) picked
    the same free port, and the second ferry could not bind it."""
    global _port_lock_fd
    if _port_lock_fd is None:
        _port_lock_fd = os.open(os.path.join(tempfile.gettempdir(), "ferry-test-ports.lock"),
                                os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.lockf(_port_lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)
        return True
    except OSError:
        return False


def free_port():
    """A loopback TCP port that is free now, for ferry to bind soon: never
    the same one twice in this process nor in two test processes at once
    (_reserve_port), and below the kernel's ephemeral range, so that no
    connection anywhere on the machine (whose local port comes from that
    range) takes it before ferry binds it."""
    while True:
        port = _port_rng.randrange(*_PORT_RANGE)
        if port in _ports_given:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                continue
        if not _reserve_port(port):
            continue
        _ports_given.add(port)
        return port


def send_all(s, data, timeout=20.0):
    """sendall on a test server's socket whose timeout is short so that its
    reads poll: the send waits up to TIMEOUT for the peer to take it. A
    ferry the machine did not run for a moment must not look like a dead
    one: sendall's timeout bounds the whole send, and a server that gave up
    after its reads' 50 ms closed the connection under a busy CI run."""
    was = s.gettimeout()
    s.settimeout(timeout)
    try:
        s.sendall(data)
    finally:
        s.settimeout(was)


def bound_socket(reuseaddr=False):
    """A TCP socket bound to a loopback port that free_port() never handed
    out: a port given to a config that ferry has not bound yet must not be
    taken by a test listener in between."""
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if reuseaddr:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return s
        s.close()


def accepted(listener, stopping):
    """The connections LISTENER accepts, until STOPPING is set or LISTENER
    is closed; its timeout says how often STOPPING is looked at."""
    while not stopping.is_set():
        try:
            sock, _ = listener.accept()
        except socket.timeout:
            continue
        except OSError:
            return
        yield sock


class LoopbackServer:
    """A server on a loopback port (PORT, else one free_port() never handed
    out): a thread accepts, and each connection is served in a thread of
    its own by serve(sock, n), N counting connections from 1
    (self.connections). A subclass sets up its own state first, then calls
    this __init__, which starts accepting; close() stops it."""

    def __init__(self, port=None, backlog=64, host=LOOPBACK):
        self.lock = threading.Lock()
        self.connections = 0
        self.stopping = threading.Event()
        if port is None and host == LOOPBACK:
            self.sock = bound_socket(reuseaddr=True)
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port or 0))
        self.sock.listen(backlog)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.address = "%s:%d" % (host, self.port)
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def close(self):
        self.stopping.set()
        self.sock.close()

    def _accept_loop(self):
        for s in accepted(self.sock, self.stopping):
            with self.lock:
                self.connections += 1
                n = self.connections
                self.accepted(s, n)
            threading.Thread(target=self.serve, args=(s, n), daemon=True).start()

    def accepted(self, sock, n):
        """Called with self.lock held as connection N is accepted."""

    def serve(self, sock, n):
        raise NotImplementedError


def rst_close(sock):
    """Close with an RST (SO_LINGER 0): the peer's next read or write fails."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def thread_affinities(f):
    """(name, CPU set) of each thread of ferry's process."""
    task = "/proc/%d/task" % f.proc.pid
    for tid in os.listdir(task):
        try:
            with open("%s/%s/comm" % (task, tid)) as fh:
                name = fh.read().strip()
            cpus = os.sched_getaffinity(int(tid))
        except OSError:
            continue            # a thread that just ended
        yield name, cpus


def thread_cpus(f):
    """{thread name: [CPU set of each such thread]} of ferry's process."""
    out = {}
    for name, cpus in thread_affinities(f):
        out.setdefault(re.sub(r"-\d+$", "", name), []).append(cpus)
    return out


def thread_syscalls(tid, names, work):
    """Runs WORK() while strace, attached to thread TID alone, records its
    calls of NAMES (system call names); returns how many there were of
    each, those that failed (EAGAIN) included. ferry's sockets are read
    with recv(2), which /proc's syscr does not count. Skips the test
    without strace."""
    if shutil.which("strace") is None:
        raise unittest.SkipTest("no strace (tools/install-deps installs it)")
    with tempfile.NamedTemporaryFile("r", prefix="ferry-strace-") as out:
        p = subprocess.Popen(["strace", "-p", str(tid), "-e", "trace=" + ",".join(names),
                              "-o", out.name], stderr=subprocess.PIPE, text=True)
        try:
            attached = p.stderr.readline()      # "strace: Process N attached"
            if "attached" not in attached:
                raise AssertionError("strace -p %s: %s%s" % (tid, attached, p.stderr.read()))
            work()
        finally:
            p.send_signal(signal.SIGINT)        # detaches; the thread runs on
            p.communicate(timeout=IO_TIMEOUT)
        calls = {n: 0 for n in names}
        for line in out:
            m = re.match(r"(\w+)\(", line)
            if m and m.group(1) in calls:
                calls[m.group(1)] += 1
        return calls


def worker_task_files(f, name):
    """{tid: text of /proc/PID/task/TID/NAME} of ferry's worker threads."""
    task = "/proc/%d/task/" % f.proc.pid
    out = {}
    for tid in os.listdir(task):
        try:
            with open(task + tid + "/comm") as fh:
                if not fh.read().startswith("ferry-worker"):
                    continue
            with open(task + tid + "/" + name) as fh:
                out[tid] = fh.read()
        except OSError:
            continue            # a thread that just ended
    return out


def wait_until(predicate, timeout, interval=0.02):
    """Poll predicate() until it is true; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def anon_kib(pid):
    """Resident anonymous memory of a process (RssAnon), KiB: what it
    allocated. VmRSS also counts mapped code, which ferry gives back after
    startup and after bursts (src/clean_maps.c): a growth read from VmRSS
    could hide an allocation behind the code pages given back."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def sanitized(pid):
    """Whether the process runs a sanitizer build: its RSS figures mean
    nothing (shadow memory, quarantine)."""
    with open("/proc/%d/maps" % pid) as f:
        maps = f.read()
    return any(s in maps for s in ("libasan", "libtsan", "libubsan", "liblsan"))


def deep_merge(base, override):
    """A new dict: override's keys replace base's, nested dicts merged."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


_payload_cache = {}


def payload(n, seed=1):
    """n pseudo-random bytes, the same for the same (n, seed)."""
    key = (n, seed)
    if key not in _payload_cache:
        _payload_cache[key] = random.Random(seed).randbytes(n)
    return _payload_cache[key]


def sha256(data):
    return hashlib.sha256(data).hexdigest()


UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TRACEPARENT_NEW_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-01$")
VIA_OUT_RE = re.compile(r"^1\.1 ferry-[0-9a-f]{8}-out$", re.I)


# ---------------------------------------------------------------------------
# PKI


@dataclass
class CertPair:
    cert: str
    key: str


class PKI:
    """A throwaway CA and certificates, made once per test process.

    server     CN=backend; DNS backend, user-service, order-service, localhost,
               IP 127.0.0.1, URI spiffe://test/backend (upstreams use it)
    client     CN=app; URI spiffe://test/app, DNS app (ferry's client cert)
    client_dns CN=app-dns; DNS app-dns only
    expired    like server, valid 2020-2021 only
    other      like server, but signed by other_ca (not trusted by ca)
    """

    SERVER_SANS = ("DNS:backend,DNS:user-service,DNS:order-service,DNS:localhost,"
                   "IP:127.0.0.1,URI:spiffe://test/backend")
    _instance = None

    @classmethod
    def get(cls):
        if cls._instance is None:
            cls._instance = cls(tempfile.mkdtemp(prefix="ferry-pki-"))
            atexit.register(shutil.rmtree, cls._instance.dir, True)
        return cls._instance

    def __init__(self, directory):
        self.dir = directory
        self.ca = self._make_ca("ca", "ferry test CA")
        self.other_ca = self._make_ca("other-ca", "some other CA")
        self.server = self._make_leaf("server", "backend", self.SERVER_SANS, self.ca)
        self.client = self._make_leaf("client", "app", "URI:spiffe://test/app,DNS:app", self.ca)
        self.client_dns = self._make_leaf("client-dns", "app-dns", "DNS:app-dns", self.ca)
        self.other = self._make_leaf("other", "backend", self.SERVER_SANS, self.other_ca)
        self.expired = self._make_expired("expired", "backend", self.SERVER_SANS, self.ca)

    def path(self, name):
        return os.path.join(self.dir, name)

    def _openssl(self, *args):
        proc = subprocess.run(["openssl", *args], cwd=self.dir, capture_output=True,
                              text=True, timeout=30)
        if proc.returncode != 0:
            raise RuntimeError("openssl %s failed: %s" % (args[0], proc.stderr.strip()))

    def _make_ca(self, name, cn):
        pair = CertPair(self.path(name + ".pem"), self.path(name + ".key"))
        self._openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
                      "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", pair.key,
                      "-out", pair.cert, "-days", "3650", "-subj", "/CN=" + cn,
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        return pair

    def _csr(self, name, cn, sans):
        key, csr, ext = (self.path(name + s) for s in (".key", ".csr", ".ext"))
        self._openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                      "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=" + cn)
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth,clientAuth\n"
                    "subjectKeyIdentifier=hash\n"
                    "authorityKeyIdentifier=keyid\n"
                    "subjectAltName=%s\n" % sans)
        return key, csr, ext

    def _make_leaf(self, name, cn, sans, ca):
        key, csr, ext = self._csr(name, cn, sans)
        cert = self.path(name + ".pem")
        self._openssl("x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key,
                      "-set_serial", str(random.getrandbits(63)), "-days", "365",
                      "-sha256", "-extfile", ext, "-out", cert)
        return CertPair(cert, key)

    def _make_expired(self, name, cn, sans, ca):
        return self.make_dated(name, cn, sans, ca, "20200101000000Z", "20210101000000Z")

    def make_dated(self, name, cn, sans, ca, start, end):
        """A leaf of CA valid from START to END (ASN.1 times, such as
        20200101000000Z): `openssl x509` of OpenSSL 3.0 takes only days
        from now; `openssl ca` takes exact dates, past ones too."""
        key, csr, ext = self._csr(name, cn, sans)
        cert = self.path(name + ".pem")
        db = self.path(name + "-db")
        os.mkdir(db)
        open(os.path.join(db, "index.txt"), "w").close()
        with open(os.path.join(db, "serial"), "w") as f:
            f.write("%016X\n" % random.getrandbits(63))
        cnf = os.path.join(db, "ca.cnf")
        with open(cnf, "w") as f:
            f.write("[ca]\ndefault_ca = d\n[d]\ndatabase = %s/index.txt\n"
                    "new_certs_dir = %s\nserial = %s/serial\ndefault_md = sha256\n"
                    "policy = p\nunique_subject = no\ncopy_extensions = none\n"
                    "[p]\ncommonName = supplied\n" % (db, db, db))
        self._openssl("ca", "-batch", "-config", cnf, "-cert", ca.cert, "-keyfile", ca.key,
                      "-in", csr, "-out", cert, "-startdate", start, "-enddate", end,
                      "-extfile", ext, "-notext")
        return CertPair(cert, key)


def pki():
    return PKI.get()


# ---------------------------------------------------------------------------
# HTTP/1.1 on the wire


class IncompleteMessage(Exception):
    """The peer closed (or stalled) before a complete message arrived."""

    def __init__(self, what, partial=b""):
        super().__init__("%s (%d bytes so far)" % (what, len(partial)))
        self.partial = partial


class Reader:
    """Buffered reads from a plain or TLS socket, honouring its timeout."""

    def __init__(self, sock, bufsize=256 * 1024):
        self.sock = sock
        self.bufsize = bufsize
        self.buf = bytearray()

    def fill(self):
        """Read once more; False on EOF (or a reset)."""
        try:
            data = self.sock.recv(self.bufsize)
        except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            data = b""
        if not data:
            return False
        self.buf += data
        return True

    def take(self, n):
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_until(self, delim, limit=1 << 20):
        """Bytes up to and including delim; None on EOF before any byte."""
        start = 0
        while True:
            i = self.buf.find(delim, start)
            if i >= 0:
                return self.take(i + len(delim))
            if len(self.buf) > limit:
                raise IncompleteMessage("no %r within %d bytes" % (delim, limit), bytes(self.buf))
            start = max(0, len(self.buf) - len(delim) + 1)
            if not self.fill():
                if not self.buf:
                    return None
                raise IncompleteMessage("EOF before %r" % delim, self.take(len(self.buf)))

    def read_exact(self, n):
        while len(self.buf) < n:
            if not self.fill():
                raise IncompleteMessage("EOF after %d of %d bytes" % (len(self.buf), n),
                                        self.take(len(self.buf)))
        return self.take(n)

    def read_line(self):
        line = self.read_until(b"\r\n")
        if line is None:
            raise IncompleteMessage("EOF before a line")
        return line[:-2]

    def read_to_close(self):
        while self.fill():
            pass
        return self.take(len(self.buf))


def parse_head(raw):
    """(start-line, [(name, value), ...]) from a head ending in CRLFCRLF.

    Names keep their case and values their inner bytes; only the OWS around
    a value is dropped, as any HTTP parser does."""
    lines = raw.split(b"\r\n")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(b":")
        headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    return lines[0].decode("latin-1"), headers


def find_all(headers, name):
    name = name.lower()
    return [v for n, v in headers if n.lower() == name]


def via_tokens(headers):
    """All Via entries in order, whether on one line or on several."""
    return [t.strip() for v in find_all(headers, "via") for t in v.split(",")]


def has_token(headers, name, token):
    """Whether a comma-separated header (any of its lines) lists token."""
    token = token.lower()
    return any(t.strip().lower() == token for v in find_all(headers, name) for t in v.split(","))


@dataclass
class Message:
    headers: list = field(default_factory=list)     # [(name, value)] as on the wire
    body: bytes = b""
    trailers: list = field(default_factory=list)
    raw_head: bytes = b""
    framing: str = "none"                           # length | chunked | close | none

    def header(self, name, default=None):
        values = find_all(self.headers, name)
        return values[0] if values else default

    def header_all(self, name):
        return find_all(self.headers, name)

    def has_token(self, name, token):
        return has_token(self.headers, name, token)

    def names(self):
        return [n.lower() for n, _ in self.headers]

    def json(self):
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Request(Message):
    method: str = ""
    target: str = ""
    version: str = ""
    conn_id: int = 0            # which upstream connection carried it
    seq: int = 0                # 0 for the first request on that connection
    tls_version: str = None
    tls_cipher: str = None      # the suite negotiated, e.g. TLS_AES_128_GCM_SHA256
    peer_cert: dict = None      # {"subject_cn", "uri_sans", "dns_sans"} or None

    def echo(self):
        """What the echo behaviour answers with (JSON-able)."""
        small = len(self.body) <= 64 * 1024
        return {"method": self.method, "target": self.target, "version": self.version,
                "headers": [list(h) for h in self.headers],
                "body": self.body.decode("latin-1") if small else None,
                "body_len": len(self.body), "body_sha256": sha256(self.body),
                "trailers": [list(t) for t in self.trailers],
                "tls_version": self.tls_version, "peer_cert": self.peer_cert,
                "conn_id": self.conn_id, "seq": self.seq}


@dataclass
class Response(Message):
    version: str = ""
    status: int = 0
    reason: str = ""
    interim: list = field(default_factory=list)     # 1xx responses before this one


def read_body(reader, headers, *, response_to=None, status=None):
    """Read a body framed as RFC 9112 §6.3 says: (body, trailers, framing).

    response_to is the request method when reading a response (None for a
    request)."""
    if response_to is not None and (response_to == "HEAD" or 100 <= status < 200
                                    or status in (204, 304)):
        return b"", [], "none"
    if has_token(headers, "transfer-encoding", "chunked"):
        return read_chunked(reader) + ("chunked",)
    lengths = find_all(headers, "content-length")
    if lengths:
        n = int(lengths[0].split(",")[0].strip())
        try:
            return reader.read_exact(n), [], "length"
        except IncompleteMessage as e:
            raise IncompleteMessage("body cut at %d of %d bytes" % (len(e.partial), n), e.partial)
    if response_to is None:
        return b"", [], "none"
    return reader.read_to_close(), [], "close"


def read_chunked(reader):
    body = bytearray()
    try:
        while True:
            size_line = reader.read_line()
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                break
            body += reader.read_exact(size)
            if reader.read_exact(2) != b"\r\n":
                raise IncompleteMessage("chunk not followed by CRLF", bytes(body))
        trailers = []
        while True:
            line = reader.read_line()
            if not line:
                return bytes(body), trailers
            name, _, value = line.partition(b":")
            trailers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    except IncompleteMessage as e:
        raise IncompleteMessage("chunked body cut: " + str(e), bytes(body))


def read_response(reader, method="GET"):
    """The next final response (1xx interim ones, except 101, collected)."""
    interim = []
    while True:
        raw = reader.read_until(b"\r\n\r\n", limit=1 << 20)
        if raw is None:
            raise IncompleteMessage("connection closed before a response")
        start, headers = parse_head(raw)
        parts = start.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise ValueError("bad status line %r" % start)
        resp = Response(headers=headers, raw_head=raw, version=parts[0], status=int(parts[1]),
                        reason=parts[2] if len(parts) > 2 else "")
        if 100 <= resp.status < 200 and resp.status != 101:
            interim.append(resp)
            continue
        resp.interim = interim
        if resp.status == 101:
            return resp
        resp.body, resp.trailers, resp.framing = read_body(reader, headers, response_to=method,
                                                          status=resp.status)
        return resp


def build_request(method, target, headers=(), body=b"", version="HTTP/1.1"):
    """Exact request bytes. Adds only Content-Length, and only when there is a
    body and neither Content-Length nor Transfer-Encoding was given."""
    headers = list(headers)
    names = {n.lower() for n, _ in headers}
    if body and not names & {"content-length", "transfer-encoding"}:
        headers.append(("Content-Length", str(len(body))))
    head = "%s %s %s\r\n" % (method, target, version)
    head += "".join("%s: %s\r\n" % h for h in headers) + "\r\n"
    return head.encode("latin-1") + body


def chunked_body(parts, trailers=()):
    """Chunked transfer coding of parts, with optional trailer fields."""
    out = bytearray()
    for part in parts:
        if part:
            out += b"%x\r\n" % len(part) + part + b"\r\n"
    out += b"0\r\n"
    for name, value in trailers:
        out += ("%s: %s\r\n" % (name, value)).encode("latin-1")
    return bytes(out + b"\r\n")


def response_bytes(status, headers=(), body=b"", reason=None, length=True):
    """A response head (+ body); Content-Length added when length is true
    and the headers frame nothing themselves."""
    headers = list(headers)
    names = {n.lower() for n, _ in headers}
    if length and not names & {"content-length", "transfer-encoding"}:
        headers.append(("Content-Length", str(len(body))))
    reason = reason if reason is not None else http.client.responses.get(status, "Status")
    head = "HTTP/1.1 %d %s\r\n" % (status, reason)
    head += "".join("%s: %s\r\n" % h for h in headers) + "\r\n"
    return head.encode("latin-1") + body


# ---------------------------------------------------------------------------
# WebSocket (RFC 6455), the minimum: handshake key and frames


WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_accept(key):
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def ws_frame(opcode, data, mask):
    """One final frame; clients mask (mask=True), servers do not."""
    head = bytearray([0x80 | opcode])
    bit = 0x80 if mask else 0
    n = len(data)
    if n < 126:
        head.append(bit | n)
    elif n < 65536:
        head.append(bit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(bit | 127)
        head += struct.pack("!Q", n)
    if mask:
        key = os.urandom(4)
        head += key
        data = _xor(data, key)
    return bytes(head) + data


def _xor(data, key):
    """RFC 6455 masking (its own inverse)."""
    n = len(data)
    if n == 0:
        return b""
    whole = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(whole, "big")).to_bytes(n, "big")


def ws_read_frame(reader):
    """(fin, opcode, payload, was_masked) of the next frame."""
    b0, b1 = reader.read_exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", reader.read_exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", reader.read_exact(8))[0]
    key = reader.read_exact(4) if b1 & 0x80 else None
    data = reader.read_exact(n)
    if key:
        data = _xor(data, key)
    return bool(b0 & 0x80), b0 & 0x0F, data, key is not None


# ---------------------------------------------------------------------------
# Upstream: behaviours


class UpstreamConnection:
    """One accepted connection of an Upstream, handed to behaviours."""

    def __init__(self, upstream, sock, conn_id):
        self.upstream = upstream
        self.sock = sock
        self.reader = Reader(sock)
        self.conn_id = conn_id
        self.keep_open = True       # a behaviour sets False to close after answering
        self.closed = False
        self.request_closes = False

    def send(self, data):
        self.sock.sendall(data)

    def sleep(self, seconds):
        """Sleep unless the upstream stops first; False if it did."""
        return not self.upstream.stopping.wait(seconds)

    def head(self, status, headers=(), reason=None):
        """Send a response head (no body framing added)."""
        self.send(response_bytes(status, self.hop_headers(headers), b"", reason, length=False))

    def respond(self, status=200, headers=(), body=b"", reason=None):
        """Send a complete Content-Length-framed response."""
        self.send(response_bytes(status, self.hop_headers(headers), body, reason))

    def hop_headers(self, headers):
        """headers plus this upstream's Keep-Alive advert and Connection: close."""
        headers = list(headers)
        names = {n.lower() for n, _ in headers}
        if self.upstream.advertise_keep_alive and "keep-alive" not in names:
            headers.append(("Keep-Alive", "timeout=%d" % self.upstream.advertise_keep_alive))
        if (self.request_closes or not self.keep_open) and "connection" not in names:
            headers.append(("Connection", "close"))
        return headers

    def close(self):
        """Close cleanly: TLS close_notify (without waiting for the peer's), FIN."""
        if self.closed:
            return
        self.closed = True
        if isinstance(self.sock, ssl.SSLSocket):
            try:
                self.sock.settimeout(0)
                self.sock.unwrap()
            except (ssl.SSLError, OSError, ValueError):
                pass
        try:
            self.sock.close()
        except OSError:
            pass

    def reset(self):
        """Close with an RST (SO_LINGER 0)."""
        self.closed = True
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.close()
        except OSError:
            pass


def echo(status=200, headers=()):
    """Answer with the JSON of what was received (Request.echo())."""
    def behave(conn, req):
        body = json.dumps(req.echo()).encode()
        conn.respond(status, [("Content-Type", "application/json"), *headers], body)
    return behave


def fixed(status=200, headers=(), body=b"", reason=None):
    """A fixed Content-Length response."""
    def behave(conn, req):
        conn.respond(status, headers, body, reason)
    return behave


def no_body(status, headers=()):
    """A head only (HEAD answers, 204, 304): no body, and no framing added."""
    def behave(conn, req):
        conn.head(status, headers)
    return behave


def delay(seconds, then=None):
    """Wait before the response head, then answer with `then` (echo)."""
    then = then or echo()

    def behave(conn, req):
        if conn.sleep(seconds):
            then(conn, req)
    return behave


def slow_body(parts, interval, chunked=False, declared=None):
    """Head at once, then each part `interval` seconds apart. With
    declared=N, Content-Length says N (more than sent: a stalled body)."""
    def behave(conn, req):
        total = declared if declared is not None else sum(len(p) for p in parts)
        framing = ("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(total))
        conn.head(200, [("Content-Type", "application/octet-stream"), framing])
        for i, part in enumerate(parts):
            if i and not conn.sleep(interval):
                return
            conn.send(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
        if declared is not None and declared > total:
            conn.sleep(60)          # stall until someone gives up
            conn.keep_open = False
        elif chunked:
            conn.send(b"0\r\n\r\n")
    return behave


def chunked(parts, trailers=(), headers=()):
    """A chunked response with optional trailers."""
    def behave(conn, req):
        extra = [("Trailer", ", ".join(n for n, _ in trailers))] if trailers else []
        conn.head(200, [*headers, *extra, ("Transfer-Encoding", "chunked")])
        conn.send(chunked_body(parts, trailers))
    return behave


def close_delimited(body, headers=()):
    """No Content-Length, no chunking: the body ends when the connection closes."""
    def behave(conn, req):
        conn.keep_open = False
        conn.send(response_bytes(200, [*headers, ("Connection", "close")], body, length=False))
    return behave


def close_without_answer():
    def behave(conn, req):
        conn.keep_open = False
    return behave


def reset():
    def behave(conn, req):
        conn.reset()
    return behave


def raw(data, close=True):
    """Send these exact bytes (a malformed response), then close."""
    def behave(conn, req):
        conn.send(data)
        conn.keep_open = not close
    return behave


def large_body(n, chunked=False, seed=1, slice_size=1 << 20):
    """payload(n, seed) as the body, Content-Length or chunked."""
    def behave(conn, req):
        data = payload(n, seed)
        framing = ("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(n))
        conn.head(200, [("Content-Type", "application/octet-stream"), framing])
        for i in range(0, n, slice_size):
            part = data[i:i + slice_size]
            conn.send(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
        if chunked:
            conn.send(b"0\r\n\r\n")
    return behave


def informational(status, headers, then=None):
    """A 1xx response first (e.g. 103 Early Hints), then `then` (echo)."""
    then = then or echo()

    def behave(conn, req):
        conn.send(response_bytes(status, headers, length=False))
        then(conn, req)
    return behave


def websocket_echo():
    """101 + RFC 6455 frame echo; each received frame is recorded in
    upstream.ws_frames as (opcode, payload, was_masked)."""
    def behave(conn, req):
        key = req.header("sec-websocket-key")
        if not (key and req.has_token("upgrade", "websocket") and req.has_token("connection", "upgrade")):
            conn.respond(400, [("Content-Type", "text/plain")], b"not a websocket upgrade\n")
            return
        conn.send(response_bytes(101, [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                       ("Sec-WebSocket-Accept", ws_accept(key))], length=False))
        conn.keep_open = False
        while True:
            _, opcode, data, masked = ws_read_frame(conn.reader)
            conn.upstream.ws_frames.append((opcode, data, masked))
            if opcode == 0x8:
                conn.send(ws_frame(0x8, data[:2], mask=False))
                return
            conn.send(ws_frame(0xA if opcode == 0x9 else opcode, data, mask=False))
    return behave


def sequence(*behaviours):
    """The i-th request gets behaviours[i]; the last one repeats."""
    lock = threading.Lock()
    count = [0]

    def behave(conn, req):
        with lock:
            i = min(count[0], len(behaviours) - 1)
            count[0] += 1
        behaviours[i](conn, req)
    return behave


# ---------------------------------------------------------------------------
# Upstream: the server


def peer_cert_info(sock):
    cert = sock.getpeercert() if isinstance(sock, ssl.SSLSocket) else None
    if not cert:
        return None
    subject = dict(kv for rdn in cert.get("subject", ()) for kv in rdn)
    sans = cert.get("subjectAltName", ())
    return {"subject_cn": subject.get("commonName"),
            "uri_sans": [v for k, v in sans if k == "URI"],
            "dns_sans": [v for k, v in sans if k == "DNS"]}


class Upstream:
    """A threaded HTTP/1.1 server on loopback, TLS + required client certs
    (from the test CA) by default, keep-alive, recording every request.

    behaviour(conn, request) answers each request (default echo()); set
    `upstream.behaviour` at any time. idle_close_after closes a connection
    idle that long; advertise_keep_alive=N adds "Keep-Alive: timeout=N".
    handshake=False accepts TCP but never completes a TLS handshake.
    """

    def __init__(self, behaviour=None, *, tls=True, require_client_cert=True, cert=None,
                 idle_close_after=30.0, advertise_keep_alive=None, handshake=True,
                 send_100_continue=True, tls_max_version=None):
        self.behaviour = behaviour or echo()
        self.tls = tls
        self.idle_close_after = idle_close_after
        self.advertise_keep_alive = advertise_keep_alive
        self.handshake = handshake
        self.send_100_continue = send_100_continue
        self.requests = []
        self.ws_frames = []
        self.handshake_errors = []
        self.errors = []                # unexpected exceptions in connection threads
        self.connections_accepted = 0
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._socks = set()
        self._threads = []
        self._ctx = self._tls_context(cert, require_client_cert, tls_max_version) if tls else None
        self._listener = bound_socket(reuseaddr=True)
        self._listener.listen(128)
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self.address = "%s:%d" % (LOOPBACK, self.port)

    @staticmethod
    def _tls_context(cert, require_client_cert, max_version):
        p = pki()
        cert = cert or p.server
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert.cert, cert.key)
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(p.ca.cert)
        if max_version:
            ctx.maximum_version = max_version
        return ctx

    # lifecycle

    def start(self):
        t = threading.Thread(target=self._accept_loop, name="upstream-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self):
        self.stopping.set()
        self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + 3
        for t in list(self._threads):
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # what happened

    def wait_requests(self, n, timeout=IO_TIMEOUT):
        """The first n recorded requests, waiting for them to arrive."""
        wait_until(lambda: len(self.requests) >= n, timeout)
        if len(self.requests) < n:
            raise AssertionError("upstream got %d requests, expected %d" % (len(self.requests), n))
        return self.requests[:n]

    @property
    def last(self):
        return self.requests[-1] if self.requests else None

    def connection_ids(self):
        return {r.conn_id for r in self.requests}

    # serving

    def _accept_loop(self):
        for sock in accepted(self._listener, self.stopping):
            with self._lock:
                self.connections_accepted += 1
                conn_id = self.connections_accepted
                self._socks.add(sock)
            t = threading.Thread(target=self._serve, args=(sock, conn_id),
                                 name="upstream-conn-%d" % conn_id, daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, sock, conn_id):
        conn = None
        try:
            sock.settimeout(IO_TIMEOUT)
            if self.tls:
                if not self.handshake:
                    self.stopping.wait(60)
                    return
                sock = self._wrap(sock)
                # a burst of handshakes (100 streams fanning out to new
                # connections) on two busy cores, ferry under ASan, can take
                # longer than IO_TIMEOUT; ferry's own connect timeout decides
                sock.settimeout(HANDSHAKE_TIMEOUT)
                try:
                    sock.do_handshake()
                except (ssl.SSLError, OSError) as e:
                    self.handshake_errors.append(str(e))
                    return
                sock.settimeout(IO_TIMEOUT)
            conn = UpstreamConnection(self, sock, conn_id)
            self._serve_requests(conn)
        except (OSError, IncompleteMessage, ValueError) as e:
            if not self.stopping.is_set() and not (conn and conn.closed):
                self.errors.append("conn %d: %r" % (conn_id, e))
        finally:
            if conn:
                conn.close()
            else:
                sock.close()
            with self._lock:
                self._socks.discard(sock)

    def _wrap(self, raw_sock):
        """The TLS socket for raw_sock (which it takes over), tracked in its
        place so that stop() can still shut it down."""
        sock = self._ctx.wrap_socket(raw_sock, server_side=True, do_handshake_on_connect=False)
        with self._lock:
            self._socks.discard(raw_sock)
            self._socks.add(sock)
        return sock

    def _serve_requests(self, conn):
        tls_version = conn.sock.version() if self.tls else None
        tls_cipher = conn.sock.cipher()[0] if self.tls else None
        peer = peer_cert_info(conn.sock)
        seq = 0
        while not self.stopping.is_set() and not conn.closed:
            if not self._wait_next_request(conn):
                return
            req = self._read_request(conn)
            if req is None:
                return
            req.conn_id, req.seq, req.tls_version, req.peer_cert = conn.conn_id, seq, tls_version, peer
            req.tls_cipher = tls_cipher
            seq += 1
            with self._lock:
                self.requests.append(req)
            conn.request_closes = (req.has_token("connection", "close")
                                   or (req.version == "HTTP/1.0"
                                       and not req.has_token("connection", "keep-alive")))
            self.behaviour(conn, req)
            if conn.closed or not conn.keep_open or conn.request_closes:
                return

    def _wait_next_request(self, conn):
        """Wait for the first byte of the next request; False on EOF or
        after idle_close_after seconds of silence."""
        if conn.reader.buf:
            return True
        conn.sock.settimeout(self.idle_close_after)
        try:
            return conn.reader.fill()
        except socket.timeout:
            return False
        finally:
            if not conn.closed:
                conn.sock.settimeout(IO_TIMEOUT)

    def _read_request(self, conn):
        raw_head = conn.reader.read_until(b"\r\n\r\n", limit=1 << 20)
        if raw_head is None:
            return None
        start, headers = parse_head(raw_head)
        method, target, version = (start.split(" ", 2) + ["", ""])[:3]
        req = Request(headers=headers, raw_head=raw_head, method=method, target=target,
                      version=version)
        if self.send_100_continue and req.header("expect", "").lower() == "100-continue":
            conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        req.body, req.trailers, req.framing = read_body(conn.reader, headers)
        return req


class Blackhole:
    """A loopback listener that never accepts and whose accept queue is
    full, so the kernel drops new SYNs and connect() just hangs: the way to
    exercise a connect timeout without leaving loopback."""

    def __init__(self):
        self._listener = bound_socket()
        self._listener.listen(0)
        self.port = self._listener.getsockname()[1]
        self.address = "%s:%d" % (LOOPBACK, self.port)
        self._fillers = []
        for _ in range(64):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(0.3)
            try:
                s.connect((LOOPBACK, self.port))
            except (socket.timeout, BlockingIOError):
                s.close()
                return          # the queue is full: SYNs are being dropped
            self._fillers.append(s)
        raise RuntimeError("could not fill the accept queue of a blackhole listener")

    def close(self):
        for s in self._fillers:
            s.close()
        self._listener.close()


# ---------------------------------------------------------------------------
# YAML (the subset ferry's config needs) and config builders


_PLAIN_RE = re.compile(r"^[A-Za-z0-9_$/.][A-Za-z0-9_$/.:{}@+-]*$")
_YAML_WORDS = {"y", "n", "yes", "no", "true", "false", "on", "off", "null", "~"}
_NUMBER_RE = re.compile(r"^[-+]?(\d[\d_]*)?(\.\d*)?([eE][-+]?\d+)?$")


def yaml_scalar(value):
    if value is True or value is False:
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    s = str(value)
    if (_PLAIN_RE.match(s) and s.lower() not in _YAML_WORDS and not _NUMBER_RE.match(s)
            and not s.endswith(":")):
        return s
    return json.dumps(s)        # a JSON string is a YAML double-quoted scalar


def to_yaml(obj, indent=0):
    """Block-style YAML for dicts, lists and scalars."""
    pad = " " * indent
    lines = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(value, (dict, list)) and value:
                lines.append("%s%s:" % (pad, yaml_scalar(key)))
                lines.append(to_yaml(value, indent + 2))
            elif isinstance(value, (dict, list)):
                lines.append("%s%s: %s" % (pad, yaml_scalar(key), "{}" if isinstance(value, dict) else "[]"))
            else:
                lines.append("%s%s: %s" % (pad, yaml_scalar(key), yaml_scalar(value)))
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, (dict, list)) and item:
                nested = to_yaml(item, indent + 2)
                lines.append(pad + "- " + nested[indent + 2:])
            else:
                lines.append("%s- %s" % (pad, yaml_scalar(item)))
    else:
        lines.append(pad + yaml_scalar(obj))
    return "\n".join(lines)


def tls_client(server_name="backend", cert=None, **extra):
    """A service's `tls:` block with the test CA and ferry's client cert."""
    p = pki()
    cert = cert or p.client
    block = {"ca": p.ca.cert, "cert": cert.cert, "key": cert.key}
    if server_name:
        block["server_name"] = server_name
    block.update(extra)
    return block


def service(upstream, server_name="backend", **extra):
    """A service pointing at one Upstream (or a port), TLS when it is."""
    if isinstance(upstream, int):
        endpoints, tls = ["%s:%d" % (LOOPBACK, upstream)], False
    else:
        endpoints, tls = [upstream.address], upstream.tls
    svc = {"endpoints": endpoints}
    if tls:
        svc["tls"] = tls_client(server_name)
    return deep_merge(svc, extra)


def ferry_config(services, *, outbound=None, admin=None, defaults=None, **top):
    """A complete config dict on fresh loopback ports, quick to stop."""
    cfg = {
        "workers": 2,
        "log": {"level": "info", "access": "stdout"},
        "drain_delay": "0s",
        "drain_timeout": "2s",
        "listeners": {
            "outbound": {"address": "%s:%d" % (LOOPBACK, free_port()), **(outbound or {})},
            "admin": {"address": "%s:%d" % (LOOPBACK, free_port()), **(admin or {})},
        },
        "services": services,
    }
    if defaults:
        cfg["defaults"] = defaults
    return deep_merge(cfg, top)


def port_of(address):
    return int(str(address).rsplit(":", 1)[1])


# ---------------------------------------------------------------------------
# Ferry: the process under test


class FerryStartError(AssertionError):
    pass


class Ferry:
    """ferry run on a config written to a temp dir.

    config is a dict (written as YAML) or a raw YAML string (then pass
    outbound_port/admin_port yourself). stdout (the access log) and stderr
    go to files in the temp dir."""

    def __init__(self, config, *, env=None, args=(), outbound_port=None, admin_port=None):
        self.dir = tempfile.mkdtemp(prefix="ferry-run-")
        self.config = config if isinstance(config, dict) else None
        self.config_path = os.path.join(self.dir, "ferry.yaml")
        with open(self.config_path, "w") as f:
            f.write(config if isinstance(config, str) else to_yaml(config) + "\n")
        listeners = (self.config or {}).get("listeners", {})
        self.outbound_port = outbound_port or (
            port_of(listeners["outbound"]["address"]) if "outbound" in listeners else None)
        self.admin_port = admin_port or (
            port_of(listeners["admin"]["address"]) if "admin" in listeners else None)
        self.env = env or {}
        self.args = list(args)
        self.proc = None
        self._killed = False        # the harness had to SIGKILL it
        self._terminated = False    # the test sent SIGTERM/SIGINT itself

    def listen_ports(self):
        """Each service's own `listen` port, by service name."""
        services = (self.config or {}).get("services", {})
        return {name: port_of(s["listen"]) for name, s in services.items() if "listen" in s}

    # lifecycle

    def start(self, timeout=START_TIMEOUT):
        binary = ferry_bin()
        if not os.access(binary, os.X_OK):
            raise FerryStartError("no ferry binary at %s (set FERRY_BIN)" % binary)
        env = dict(os.environ)
        for k, v in self.env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        with open(self.path("stdout"), "wb") as out, open(self.path("stderr"), "wb") as err:
            self.proc = subprocess.Popen([binary, "-c", self.config_path, *self.args],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         env=env, cwd=self.dir)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        if self.admin_port:
            self._wait(lambda: self._healthz_ok(), deadline, "/healthz did not answer 200")
        ports = [self.outbound_port, *self.listen_ports().values()]
        for port in filter(None, ports):
            self._wait(lambda: self._connectable(port), deadline, "port %d not accepting" % port)

    def _wait(self, predicate, deadline, what):
        while True:
            if self.proc.poll() is not None:
                raise FerryStartError("ferry exited with %s while starting:\n%s"
                                      % (self.exit_description(), self.stderr_tail()))
            if predicate():
                return
            if time.monotonic() > deadline:
                raise FerryStartError("ferry not ready: %s\n%s" % (what, self.stderr_tail()))
            time.sleep(0.02)

    def _healthz_ok(self):
        try:
            return self.admin("/healthz", timeout=0.5).status == 200
        except (OSError, IncompleteMessage, ValueError):
            return False

    @staticmethod
    def _connectable(port):
        try:
            socket.create_connection((LOOPBACK, port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if sig in (signal.SIGTERM, signal.SIGINT):
            self._terminated = True
        self.proc.send_signal(sig)

    def freeze(self):
        """SIGSTOP, returning once every thread has stopped: kill() wakes
        one thread to take the signal, and on a loaded machine another may
        still run a turn of its loop before that one is scheduled."""
        self.proc.send_signal(signal.SIGSTOP)
        tasks = "/proc/%d/task" % self.proc.pid
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            states = []
            for tid in os.listdir(tasks):
                try:
                    with open("%s/%s/stat" % (tasks, tid)) as f:
                        states.append(f.read().rsplit(")", 1)[1].split()[0])
                except FileNotFoundError:
                    pass
            if states and all(st in "tT" for st in states):
                return
            time.sleep(0.005)
        raise AssertionError("ferry did not stop within 10 s of SIGSTOP")

    def stop(self, timeout=None):
        """SIGTERM, then SIGKILL after the drain budget; the problems seen
        (a crash is an exit by signal), as a list of strings."""
        if self.proc is None:
            return []
        problems = []
        if self.proc.poll() is not None:
            if not (self._terminated and self.proc.returncode == 0):
                problems.append("ferry died during the test: %s" % self.exit_description())
        else:
            timeout = timeout if timeout is not None else self._drain_timeout() + STOP_GRACE
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._killed = True
                self.proc.kill()
                self.proc.wait(5)
                problems.append("ferry did not exit within %.1fs of SIGTERM" % timeout)
            if not self._killed and self.proc.returncode != 0:
                problems.append("ferry exited with %s after SIGTERM" % self.exit_description())
        problems += self.sanitizer_reports()
        if problems:
            problems.append("stderr tail:\n" + self.stderr_tail())
        return problems

    def _drain_timeout(self):
        value = str((self.config or {}).get("drain_timeout", "30s"))
        m = re.match(r"^(\d+)(ms|s|m)$", value)
        if not m:
            return 30.0
        return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]

    def exit_description(self):
        rc = self.proc.returncode
        if rc is None:
            return "still running"
        if rc < 0:
            return "signal %s%s" % (signal.Signals(-rc).name,
                                    " (sent by the harness)" if self._killed else " (crash)")
        return "status %d" % rc

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    # output

    def path(self, name):
        return os.path.join(self.dir, name)

    def stderr_text(self):
        with open(self.path("stderr"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stdout_text(self):
        with open(self.path("stdout"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stderr_tail(self, lines=30):
        return "\n".join(self.stderr_text().splitlines()[-lines:])

    def reload(self, config, timeout=5.0):
        """Rewrite the config (a dict, atomically), SIGHUP, and wait until
        config_reloads_total{result="success"} moves; AssertionError when
        it does not (a failed reload, or none within timeout)."""
        def successes():
            m = re.search(r'^ferry_config_reloads_total\{result="success"\} (\S+)$',
                          self.admin("/metrics").body.decode(), re.M)
            return float(m.group(1)) if m else 0.0
        before = successes()
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(to_yaml(config) + "\n")
        os.replace(tmp, self.config_path)
        self.config = config
        self.signal(signal.SIGHUP)
        if not wait_until(lambda: successes() > before, timeout):
            raise AssertionError("SIGHUP: no successful reload within %.0fs\n%s"
                                 % (timeout, self.stderr_tail()))
        time.sleep(0.05)    # the workers take the new snapshot by message

    def sanitizer_reports(self):
        text = self.stderr_text()
        marks = ("AddressSanitizer", "LeakSanitizer", "ThreadSanitizer", "runtime error:")
        return ["sanitizer report in stderr: " + m for m in marks if m in text]

    def access_log(self):
        """The JSON lines of the access log (log.access: stdout)."""
        out = []
        for line in self.stdout_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    # talking to it

    def admin(self, path, timeout=IO_TIMEOUT):
        return request(self.admin_port, "GET", path, timeout=timeout)

    def get(self, path="/", host=None, headers=(), **kw):
        """GET on the outbound port with Host: host."""
        hdrs = [("Host", host)] if host else []
        return request(self.outbound_port, "GET", path, [*hdrs, *headers], **kw)

    def client(self, port=None, timeout=IO_TIMEOUT):
        return RawClient(port or self.outbound_port, timeout)


# ---------------------------------------------------------------------------
# clients


class RawClient:
    """A TCP connection to send exact bytes and read HTTP/1.1 responses."""

    def __init__(self, port, timeout=IO_TIMEOUT):
        self.sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = Reader(self.sock)

    def send(self, data):
        self.sock.sendall(data)

    def request(self, method, target, headers=(), body=b"", version="HTTP/1.1"):
        """Send a request (build_request) and read its response."""
        self.send(build_request(method, target, headers, body, version))
        return self.read_response(method)

    def read_response(self, method="GET"):
        return read_response(self.reader, method)

    def peer_closed(self, timeout=2.0):
        """True when the peer closes within timeout (any pending bytes are
        discarded), False if the connection is still open then."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.sock.settimeout(left)
                if not self.reader.fill():
                    return True
        except socket.timeout:
            return False
        except OSError:
            return True

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def request(port, method="GET", path="/", headers=(), body=None, timeout=IO_TIMEOUT):
    """One request over http.client (which adds Host, Accept-Encoding and
    Content-Length unless given); a Response with headers in wire order."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        names = {n.lower() for n, _ in headers}
        conn.putrequest(method, path, skip_host="host" in names,
                        skip_accept_encoding="accept-encoding" in names)
        for name, value in headers:
            conn.putheader(name, value)
        if body is not None and "content-length" not in names and "transfer-encoding" not in names:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        return Response(headers=resp.getheaders(), body=data, version="HTTP/%d.%d" % divmod(resp.version, 10),
                        status=resp.status, reason=resp.reason)
    finally:
        conn.close()


# ---------------------------------------------------------------------------
# unittest glue


class FerryTestCase(unittest.TestCase):
    """Starts upstreams and ferries for a test and stops them after it; a
    ferry that died or crashed during the test fails that test."""

    def setUp(self):
        self._upstreams = []
        self._ferries = []
        self._closers = []

    def tearDown(self):
        problems = []
        for f in self._ferries:
            problems += f.stop()
            f.cleanup()
        for u in self._upstreams:
            u.stop()
        for c in self._closers:
            c()
        if problems:
            self.fail("\n".join(problems))

    def upstream(self, behaviour=None, **kw):
        u = Upstream(behaviour, **kw).start()
        self._upstreams.append(u)
        return u

    def blackhole(self):
        b = Blackhole()
        self._closers.append(b.close)
        return b

    def ferry(self, services=None, *, config=None, env=None, args=(), **cfg_kw):
        """Start ferry on ferry_config(services, **cfg_kw), or on `config`."""
        f = Ferry(config if config is not None else ferry_config(services, **cfg_kw),
                  env=env, args=args)
        self._ferries.append(f)
        return f.start()

    def ferry_on_cpus(self, cpus, **conf):
        """ferry (one service `svc`) started on the CPU set CPUS, which it
        inherits, and answering; (ferry, its config)."""
        up = self.upstream()
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, cpus)
        try:
            cfg = ferry_config({"svc": service(up)}, **conf)
            f = self.ferry(config=cfg)
        finally:
            os.sched_setaffinity(0, before)
        self.assertEqual(f.get("/", host="svc").status, 200)
        return f, cfg

    def start_inbound(self, local_app, key, alpn=None, listener=(), **cfg_kw):
        """ferry (self.f) with an mTLS inbound listener on self.port to
        LOCAL_APP, accepting KEY, and the TLS context of an allowed peer
        (self.ctx, offering ALPN). LISTENER adds to the listener's keys,
        CFG_KW to the config's."""
        p = pki()
        self.port = free_port()
        self.f = self.ferry({}, env={"K": key}, listeners={"inbound": dict({
            "address": "127.0.0.1:%d" % self.port,
            "tls": {"cert": p.server.cert, "key": p.server.key, "client_ca": p.ca.cert},
            "auth": {"keys_env": ["K"]},
            "local_app": local_app}, **dict(listener))}, **cfg_kw)
        self.ctx = ssl.create_default_context(cafile=p.ca.cert)
        self.ctx.check_hostname = False
        self.ctx.load_cert_chain(p.client.cert, p.client.key)
        if alpn:
            self.ctx.set_alpn_protocols(alpn)
        return self.f

    # assertions

    def assert_ferry_error(self, resp, status, code, message_re=None, correlation_id=None):
        """resp is an error ferry generated (SPEC §7); every mismatch is
        reported at once. Returns the parsed body."""
        problems = []

        def check(ok, what):
            if not ok:
                problems.append(what)

        check(resp.status == status, "status %d, expected %d" % (resp.status, status))
        ctype = (resp.header("content-type") or "").split(";")[0].strip().lower()
        check(ctype == "application/json", "content-type %r" % resp.header("content-type"))
        check(resp.header("x-ferry-error") == code, "x-ferry-error %r" % resp.header("x-ferry-error"))
        corr = resp.header_all("x-correlation-id")
        check(len(corr) == 1, "x-correlation-id %r, expected one" % corr)
        if correlation_id is not None:
            check(corr == [correlation_id], "x-correlation-id %r, expected %r" % (corr, correlation_id))
        try:
            body = resp.json()
        except ValueError:
            body = {}
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        check(set(body) == {"success", "error"} and body["success"] is False,
              "body is not {\"success\":false,\"error\":{...}}")
        check(error.get("code") == code, "error.code %r" % error.get("code"))
        message = error.get("message")
        check(isinstance(message, str) and message.strip(), "error.message %r" % message)
        if message_re and isinstance(message, str):
            check(re.search(message_re, message), "error.message %r !~ %r" % (message, message_re))
        if problems:
            self.fail("not ferry's %d %s error: %s\n  got %d %r\n  %r" % (
                status, code, "; ".join(problems), resp.status, resp.headers, resp.body[:300]))
        return body

    def assert_upstream_clean(self, upstream):
        self.assertEqual(upstream.errors, [], "upstream saw unexpected errors")


def main():
    """Run the calling module's tests; exit non-zero on failure."""
    unittest.main(module="__main__", verbosity=2)
