#!/usr/bin/env python3
"""A fault-injecting HTTP proxy for the sandbox cloud (stdlib only, one thread per connection).

It listens on 127.0.0.1 only and forwards every request to one upstream base URL (nova-api,
Placement ...), streaming both bodies and keeping the headers (Host is set to the upstream's).
Faults are injected before forwarding, so a test knows exactly which requests the service never saw:

  error_rate      0..1   that fraction is answered by the proxy itself with `status` (503 by default;
                         a 429 carries Retry-After: `retry_after`, 1 unless set), never forwarded
  reset_rate      0..1   that fraction has its connection reset (TCP RST) without forwarding
  outage_seconds  N      for the next N seconds every request is answered `status` (outage_mode
                         status) or reset (outage_mode reset); 0 ends an outage
  methods                only these methods are faulted (list, or "GET,POST"); null: all
  path_regex             only paths matching it are faulted; null: all
  seed                   reseeds the random source (the same seed gives the same sequence of decisions)

Control, on the same port and never faulted (not forwarded either):
  GET  /__faults__                 settings, outage left, counters (forwarded, injected_<status>,
                                   injected_reset, upstream_errors) in total and by method
  POST /__faults__                 a JSON object of settings to change; answers like GET
  POST /__faults__/reset-counters  zero the counters and the event list
  GET  /__faults__/events          the last 1000 injected faults (time, method, path, action)

Absolute URLs: a Location / Content-Location header that points at the upstream is rewritten to the
proxy; bodies (the version documents' links) are not, which is enough when clients reach the proxy
through an endpoint override (openstacksdk's <service>_endpoint_override), as the sandbox's tests do.

Usage:
  faultproxy.py --listen 127.0.0.1:PORT --upstream URL --pid-file F [--log F] [--daemon]
                [--max-seconds 3600] [key=value ...]        serve (PORT 0: any free port, printed)
  faultproxy.py set --listen 127.0.0.1:PORT key=value ...   change settings (values are JSON or text)
  faultproxy.py show --listen 127.0.0.1:PORT                settings and counters
  faultproxy.py reset-counters --listen 127.0.0.1:PORT
  faultproxy.py stop --pid-file F                           stop the proxy named in the pid file
  faultproxy.py selftest                                    check the proxy against a local http.server
"""

import argparse
import collections
import hashlib
import http.client
import http.server
import io
import json
import os
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

CONTROL = '/__faults__'
CHUNK = 64 * 1024
LISTEN_HOST = '127.0.0.1'
UPSTREAM_HOSTS = ('127.0.0.1', 'localhost', '::1')
# Headers that belong to one connection, never forwarded (RFC 9110 7.6.1).
HOP_BY_HOP = frozenset(('connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization',
                        'te', 'trailer', 'transfer-encoding', 'upgrade'))
MAX_DISCARD = 64 * 1024 * 1024     # an injected answer reads at most this much of a request body, then closes


class SettingsError(ValueError):
    pass


class ClientGone(Exception):
    """The client closed or reset its connection while sending its request body."""


def _rate(value, key):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise SettingsError('%s must be a number from 0 to 1, not %r' % (key, value))
    return float(value)


class Faults(object):
    """The settings, the random source and the counters, behind one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.error_rate = 0.0
        self.reset_rate = 0.0
        self.status = 503
        self.retry_after = None
        self.outage_mode = 'status'
        self.outage_until = None
        self.methods = None
        self.path_regex = None
        self.seed = None
        self.random = random.Random()
        self.started = time.time()
        self.reset_counters()

    def reset_counters(self):
        self.counters = collections.Counter()
        self.by_method = collections.defaultdict(collections.Counter)
        self.events = collections.deque(maxlen=1000)

    def update(self, changes):
        if not isinstance(changes, dict):
            raise SettingsError('settings must be a JSON object')
        unknown = sorted(set(changes) - {'error_rate', 'reset_rate', 'status', 'retry_after', 'outage_seconds',
                                         'outage_mode', 'methods', 'path_regex', 'seed'})
        if unknown:
            raise SettingsError('unknown settings: %s' % ', '.join(unknown))
        with self.lock:
            error_rate = _rate(changes.get('error_rate', self.error_rate), 'error_rate')
            reset_rate = _rate(changes.get('reset_rate', self.reset_rate), 'reset_rate')
            if error_rate + reset_rate > 1:
                raise SettingsError('error_rate + reset_rate must not exceed 1')
            status = changes.get('status', self.status)
            if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
                raise SettingsError('status must be an HTTP error code (400-599), not %r' % (status,))
            retry_after = changes.get('retry_after', self.retry_after)
            if retry_after is not None and (isinstance(retry_after, bool) or not isinstance(retry_after, int)
                                            or retry_after < 0):
                raise SettingsError('retry_after must be whole seconds (or null), not %r' % (retry_after,))
            outage_mode = changes.get('outage_mode', self.outage_mode)
            if outage_mode not in ('status', 'reset'):
                raise SettingsError('outage_mode must be status or reset, not %r' % (outage_mode,))
            methods = changes.get('methods', self.methods)
            if isinstance(methods, str):
                methods = [m for m in methods.replace(' ', ',').split(',') if m]
            if methods is not None:
                if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
                    raise SettingsError('methods must be a list of HTTP methods (or null)')
                methods = sorted(set(m.upper() for m in methods))
            path_regex = changes.get('path_regex', self.path_regex)
            if path_regex is not None:
                try:
                    re.compile(path_regex)
                except (re.error, TypeError) as error:
                    raise SettingsError('path_regex: %s' % error)
            outage_seconds = changes.get('outage_seconds')
            if outage_seconds is not None and (isinstance(outage_seconds, bool) or
                                               not isinstance(outage_seconds, (int, float)) or outage_seconds < 0):
                raise SettingsError('outage_seconds must be a number of seconds >= 0')
            self.error_rate, self.reset_rate, self.status, self.retry_after = error_rate, reset_rate, status, retry_after
            self.outage_mode, self.methods, self.path_regex = outage_mode, methods, path_regex
            if 'outage_seconds' in changes:
                self.outage_until = time.monotonic() + outage_seconds if outage_seconds else None
            if 'seed' in changes:
                self.seed = changes['seed']
                self.random = random.Random(self.seed)

    def decide(self, method, path):
        """forward, status or reset, for one request (not a control request)."""
        with self.lock:
            if self.methods is not None and method not in self.methods:
                return 'forward'
            if self.path_regex is not None and not re.search(self.path_regex, path):
                return 'forward'
            if self.outage_until is not None:
                if time.monotonic() < self.outage_until:
                    return self.outage_mode
                self.outage_until = None
            if not self.error_rate and not self.reset_rate:
                return 'forward'
            draw = self.random.random()
            if draw < self.error_rate:
                return 'status'
            if draw < self.error_rate + self.reset_rate:
                return 'reset'
            return 'forward'

    def count(self, method, name, path=None):
        with self.lock:
            self.counters[name] += 1
            self.by_method[method][name] += 1
            if path is not None:
                self.events.append({'time': round(time.time(), 3), 'method': method, 'path': path, 'fault': name})

    def outage_left(self):
        with self.lock:
            if self.outage_until is None:
                return 0
            return max(0.0, round(self.outage_until - time.monotonic(), 3))

    def snapshot(self):
        outage_left = self.outage_left()
        with self.lock:
            return {'settings': {'error_rate': self.error_rate, 'reset_rate': self.reset_rate, 'status': self.status,
                                 'retry_after': self.retry_after, 'outage_mode': self.outage_mode,
                                 'methods': self.methods, 'path_regex': self.path_regex, 'seed': self.seed},
                    'outage_left': outage_left,
                    'counters': dict(self.counters),
                    'by_method': dict((m, dict(c)) for m, c in sorted(self.by_method.items())),
                    'uptime': round(time.time() - self.started, 1), 'pid': os.getpid()}


class ProxyServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, port, upstream, log=None, upstream_timeout=600):
        self.upstream = urllib.parse.urlsplit(upstream)
        self.upstream_base = upstream.rstrip('/')
        self.upstream_timeout = upstream_timeout
        self.faults = Faults()
        self.log_file = log
        self.log_lock = threading.Lock()
        http.server.ThreadingHTTPServer.__init__(self, (LISTEN_HOST, port), Handler)
        self.proxy_base = 'http://%s:%d' % (LISTEN_HOST, self.server_address[1])

    def log(self, line):
        if self.log_file is None:
            return
        with self.log_lock:
            self.log_file.write('%s %s\n' % (time.strftime('%Y-%m-%dT%H:%M:%S'), line))
            self.log_file.flush()

    def shutdown_request(self, request):
        # A connection the handler reset is closed already: only drop it.
        if request.fileno() == -1:
            self.close_request(request)
            return
        http.server.ThreadingHTTPServer.shutdown_request(self, request)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'vmops-faultproxy'

    def setup(self):
        http.server.BaseHTTPRequestHandler.setup(self)
        # Headers and body go out in separate writes: without this, Nagle's algorithm and the client's
        # delayed ACK add 40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args):
        pass

    # -- dispatch -----------------------------------------------------------------------------------
    def handle_any(self):
        started = time.monotonic()
        path = urllib.parse.urlsplit(self.path).path
        if path == CONTROL or path.startswith(CONTROL + '/'):
            self.control(path)
            return
        faults = self.server.faults
        action = faults.decide(self.command, path)
        if action == 'reset':
            faults.count(self.command, 'injected_reset', path)
            self.server.log('%s %s reset' % (self.command, path))
            self.reset()
            return
        if action == 'status':
            status = faults.status
            faults.count(self.command, 'injected_%d' % status, path)
            self.server.log('%s %s injected %d' % (self.command, path, status))
            self.discard_body()
            self.inject(status)
            return
        status = self.forward()
        self.server.log('%s %s %s %.3f' % (self.command, path, status, time.monotonic() - started))

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = handle_any

    # -- control ------------------------------------------------------------------------------------
    def control(self, path):
        faults = self.server.faults
        try:
            body = b''.join(self.body_chunks())
            if path == CONTROL and self.command == 'GET':
                answer = faults.snapshot()
            elif path == CONTROL and self.command == 'POST':
                faults.update(json.loads(body.decode('utf-8') or '{}'))
                answer = faults.snapshot()
                self.server.log('control %s' % json.dumps(answer['settings'], sort_keys=True))
            elif path == CONTROL + '/reset-counters' and self.command == 'POST':
                with faults.lock:
                    faults.reset_counters()
                answer = faults.snapshot()
            elif path == CONTROL + '/events' and self.command == 'GET':
                with faults.lock:
                    answer = {'events': list(faults.events)}
            else:
                self.send_json(404, {'error': 'no such control request: %s %s' % (self.command, path)})
                return
        except ClientGone:
            self.close_connection = True
            return
        except (SettingsError, ValueError) as error:
            self.send_json(400, {'error': str(error)})
            return
        self.send_json(200, answer)

    def send_json(self, status, answer, extra=()):
        data = json.dumps(answer, sort_keys=True).encode('utf-8') + b'\n'
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        for name, value in extra:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header('Connection', 'close')
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(data)

    # -- faults -------------------------------------------------------------------------------------
    def inject(self, status):
        faults = self.server.faults
        extra = [('X-Vmops-Fault', 'injected')]
        retry_after = faults.retry_after if faults.retry_after is not None else (1 if status == 429 else None)
        if retry_after is not None:
            extra.append(('Retry-After', str(retry_after)))
        reason = http.client.responses.get(status, 'Error')
        self.send_json(status, {'message': '%s (injected by the vmops fault proxy, not forwarded)' % reason,
                                'code': status}, extra)

    def reset(self):
        """Close the connection with a TCP reset, nothing answered, the request not forwarded."""
        self.close_connection = True
        sock = self.connection
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        # The buffered reader and writer hold references to the socket: drop them all, so the
        # close is the real one (with linger 0, a reset).
        self.wfile = io.BytesIO()
        self.rfile.close()
        sock.close()

    def discard_body(self):
        """Read the request body of an injected answer, so the client's connection stays usable."""
        length = self.headers.get('Content-Length')
        if 'chunked' in self.headers.get('Transfer-Encoding', '').lower() or \
                (length is not None and int(length) > MAX_DISCARD):
            self.close_connection = True
            return
        try:
            for _data in self.body_chunks():
                pass
        except ClientGone:
            self.close_connection = True

    # -- forwarding ---------------------------------------------------------------------------------
    def body_chunks(self):
        """The request body, decoded, in pieces (Content-Length or chunked)."""
        try:
            yield from self._body_chunks()
        except (OSError, ValueError) as error:
            raise ClientGone(str(error))

    def _body_chunks(self):
        if 'chunked' in self.headers.get('Transfer-Encoding', '').lower():
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise ClientGone('client closed within a chunked body')
                size = int(line.split(b';', 1)[0].strip() or b'0', 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b'\r\n', b'\n', b''):
                        pass                       # trailers
                    return
                left = size
                while left:
                    data = self.rfile.read(min(left, CHUNK))
                    if not data:
                        raise ClientGone('client closed within a chunk')
                    left -= len(data)
                    yield data
                self.rfile.readline(16)            # the CRLF after the chunk
        left = int(self.headers.get('Content-Length') or 0)
        while left > 0:
            data = self.rfile.read(min(left, CHUNK))
            if not data:
                raise ClientGone('client closed within the body')
            left -= len(data)
            yield data

    def rewrite(self, value):
        """An absolute URL under the upstream's base, as the same URL under the proxy's."""
        base = self.server.upstream_base
        if value == base or value.startswith((base + '/', base + '?')):
            return self.server.proxy_base + value[len(base):]
        return value

    def forward(self):
        faults, server = self.server.faults, self.server
        upstream = server.upstream
        target = upstream.path.rstrip('/') + self.path if upstream.path.strip('/') else self.path
        chunked = 'chunked' in self.headers.get('Transfer-Encoding', '').lower()
        conn = http.client.HTTPConnection(upstream.hostname, upstream.port or 80, timeout=server.upstream_timeout)
        try:
            try:
                conn.connect()
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.putrequest(self.command, target, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    lower = name.lower()
                    if lower in HOP_BY_HOP or lower == 'host' or (chunked and lower == 'content-length'):
                        continue
                    conn.putheader(name, value)
                conn.putheader('Host', upstream.netloc)
                conn.putheader('Connection', 'close')      # a fresh upstream connection per request
                if chunked:
                    conn.putheader('Transfer-Encoding', 'chunked')
                conn.endheaders()
                for data in self.body_chunks():
                    conn.send(b'%x\r\n%s\r\n' % (len(data), data) if chunked else data)
                if chunked:
                    conn.send(b'0\r\n\r\n')
                response = conn.getresponse()
            except ClientGone:
                self.close_connection = True
                return 'client gone'
            except (OSError, http.client.HTTPException) as error:
                faults.count(self.command, 'upstream_errors')
                self.close_connection = True
                self.send_json(502, {'message': 'Bad Gateway (vmops fault proxy): %s' % error, 'code': 502})
                return 502
            faults.count(self.command, 'forwarded')
            self.relay(response)
            return response.status
        finally:
            conn.close()

    def relay(self, response):
        status = response.status
        no_body = self.command == 'HEAD' or status in (204, 304) or 100 <= status < 200
        length = response.getheader('Content-Length')
        self.send_response_only(status, response.reason)
        for name, value in response.getheaders():
            lower = name.lower()
            if lower in HOP_BY_HOP:
                continue
            if lower in ('location', 'content-location'):
                value = self.rewrite(value)
            self.send_header(name, value)
        if not no_body and length is None:
            self.send_header('Transfer-Encoding', 'chunked')
        if self.close_connection:
            self.send_header('Connection', 'close')
        self.end_headers()
        if no_body:
            return
        try:
            while True:
                data = response.read1(CHUNK)
                if not data:
                    break
                self.wfile.write(b'%x\r\n%s\r\n' % (len(data), data) if length is None else data)
            if length is None:
                self.wfile.write(b'0\r\n\r\n')
            self.wfile.flush()
        except (OSError, http.client.HTTPException):
            # The upstream or the client went away within the body: the client must not reuse this connection.
            self.close_connection = True


def make_server(listen, upstream, log=None):
    host, _sep, port = listen.rpartition(':')
    if host != LISTEN_HOST or not port.isdigit():
        raise SystemExit('faultproxy: --listen must be %s:PORT (this proxy listens on the loopback only), not %r'
                         % (LISTEN_HOST, listen))
    parts = urllib.parse.urlsplit(upstream)
    if parts.scheme != 'http' or parts.hostname not in UPSTREAM_HOSTS or parts.query or parts.fragment:
        raise SystemExit('faultproxy: --upstream must be an http:// URL on this machine (%s), not %r'
                         % (', '.join(UPSTREAM_HOSTS), upstream))
    return ProxyServer(int(port), upstream, log)


def parse_settings(pairs):
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition('=')
        if not sep or not key:
            raise SystemExit('faultproxy: settings are key=value, not %r' % pair)
        try:
            settings[key] = json.loads(value)
        except ValueError:
            settings[key] = value
    return settings


def read_pid(pid_file):
    try:
        with open(pid_file) as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def is_proxy(pid):
    """True if pid is a live (not zombie) faultproxy process."""
    try:
        with open('/proc/%d/stat' % pid) as handle:
            if handle.read().rsplit(')', 1)[1].split()[0] == 'Z':
                return False
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            return b'faultproxy' in handle.read()
    except (OSError, IndexError):
        return False


def serve(argv):
    parser = argparse.ArgumentParser(prog='faultproxy.py', description='fault-injecting HTTP proxy (see the module doc)')
    parser.add_argument('--listen', required=True, help='127.0.0.1:PORT (PORT 0: a free port, printed)')
    parser.add_argument('--upstream', required=True, help='base URL to forward to, e.g. http://127.0.0.1:8774')
    parser.add_argument('--pid-file', required=True)
    parser.add_argument('--log', help='one line per request (appended)')
    parser.add_argument('--daemon', action='store_true', help='detach; return once the proxy listens')
    parser.add_argument('--max-seconds', type=float, default=3600, help='exit by itself after this long (default 3600)')
    parser.add_argument('settings', nargs='*', metavar='key=value', help='initial fault settings')
    args = parser.parse_args(argv)
    settings = parse_settings(args.settings)
    old = read_pid(args.pid_file)
    if old is not None and is_proxy(old):
        raise SystemExit('faultproxy: already running as pid %d (%s)' % (old, args.pid_file))
    log = open(args.log, 'a', buffering=1) if args.log else None
    server = make_server(args.listen, args.upstream, log)
    try:
        server.faults.update(settings)
    except SettingsError as error:
        raise SystemExit('faultproxy: %s' % error)
    listen = '%s:%d' % server.server_address[:2]
    if args.daemon:
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid:
            os.close(ready_w)
            with os.fdopen(ready_r, 'rb') as ready:
                ok = ready.read() == b'ok'
            if not ok:
                raise SystemExit('faultproxy: the daemon did not start (see %s)' % (args.log or 'its log'))
            print(json.dumps({'pid': pid, 'listen': listen, 'upstream': args.upstream}))
            sys.stdout.flush()
            os._exit(0)
        os.close(ready_r)
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        out = log.fileno() if log else null
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
    with open(args.pid_file + '.tmp', 'w') as handle:
        handle.write('%d\n' % os.getpid())
    os.rename(args.pid_file + '.tmp', args.pid_file)
    server.log('listening on %s, upstream %s, pid %d, max %s s' % (listen, args.upstream, os.getpid(), args.max_seconds))
    if args.daemon:
        os.write(ready_w, b'ok')
        os.close(ready_w)
    else:
        print(json.dumps({'pid': os.getpid(), 'listen': listen, 'upstream': args.upstream}))
        sys.stdout.flush()
    stopping = threading.Event()

    def stop(reason):
        if not stopping.is_set():
            stopping.set()
            server.log('stopping: %s' % reason)
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, lambda *_: stop('SIGTERM'))
    signal.signal(signal.SIGINT, lambda *_: stop('SIGINT'))
    timer = threading.Timer(args.max_seconds, stop, ('max-seconds (%s s) reached' % args.max_seconds,))
    timer.daemon = True
    timer.start()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        timer.cancel()
        server.server_close()
        if read_pid(args.pid_file) == os.getpid():
            os.unlink(args.pid_file)
        server.log('stopped; counters %s' % json.dumps(server.faults.snapshot()['counters'], sort_keys=True))


def control_request(listen, path, body=None):
    host, _sep, port = listen.rpartition(':')
    if host != LISTEN_HOST:
        raise SystemExit('faultproxy: --listen must be %s:PORT' % LISTEN_HOST)
    data = None if body is None else json.dumps(body).encode('utf-8')
    request = urllib.request.Request('http://%s:%s%s' % (host, port, path), data=data,
                                     method='GET' if body is None else 'POST',
                                     headers={'Content-Type': 'application/json'})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read().decode('utf-8'))
    except urllib.error.HTTPError as error:
        raise SystemExit('faultproxy: %s' % error.read().decode('utf-8', 'replace').strip())
    except OSError as error:
        raise SystemExit('faultproxy: no proxy answers on %s: %s' % (listen, error))


def command_client(name, argv):
    parser = argparse.ArgumentParser(prog='faultproxy.py %s' % name)
    parser.add_argument('--listen', required=True, help='127.0.0.1:PORT of the proxy')
    if name == 'set':
        parser.add_argument('settings', nargs='+', metavar='key=value')
    args = parser.parse_args(argv)
    if name == 'set':
        answer = control_request(args.listen, CONTROL, parse_settings(args.settings))
    elif name == 'show':
        answer = control_request(args.listen, CONTROL)
    else:
        answer = control_request(args.listen, CONTROL + '/reset-counters', {})
    print(json.dumps(answer, sort_keys=True))


def command_stop(argv):
    parser = argparse.ArgumentParser(prog='faultproxy.py stop')
    parser.add_argument('--pid-file', required=True)
    parser.add_argument('--wait', type=float, default=10)
    args = parser.parse_args(argv)
    pid = read_pid(args.pid_file)
    if pid is None or not is_proxy(pid):
        print(json.dumps({'stopped': False, 'pid': pid, 'reason': 'not running'}))
        if pid is not None and os.path.exists(args.pid_file):
            os.unlink(args.pid_file)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.wait
    while is_proxy(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = is_proxy(pid)
    if killed:
        os.kill(pid, signal.SIGKILL)
    if read_pid(args.pid_file) == pid:
        os.unlink(args.pid_file)
    print(json.dumps({'stopped': True, 'pid': pid, 'killed': killed}))


# -- self test ---------------------------------------------------------------------------------------
class _Upstream(http.server.BaseHTTPRequestHandler):
    """A tiny service: echoes what it received, streams on demand."""
    protocol_version = 'HTTP/1.1'
    seen = []
    release = threading.Event()

    def log_message(self, *args):
        pass

    def answer(self):
        body = b''
        if 'chunked' in self.headers.get('Transfer-Encoding', '').lower():
            while True:
                size = int(self.rfile.readline().split(b';')[0], 16)
                if not size:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get('Content-Length') or 0))
        self.seen.append((self.command, self.path))
        path = self.path[len('/v2.1'):] if self.path.startswith('/v2.1/') else self.path
        if path.startswith('/stream'):
            # First piece, then wait for the client to have it: a buffering proxy would deadlock here.
            self.send_response(200)
            self.send_header('Transfer-Encoding', 'chunked')
            self.end_headers()
            for piece in (b'first-piece', b'x' * 300000, b'last'):
                self.wfile.write(b'%x\r\n%s\r\n' % (len(piece), piece))
                self.wfile.flush()
                if piece == b'first-piece':
                    self.release.wait(10)
            self.wfile.write(b'0\r\n\r\n')
            return
        if path.startswith('/empty'):
            self.send_response(204)
            self.end_headers()
            return
        data = json.dumps({'method': self.command, 'path': self.path, 'host': self.headers.get('Host'),
                           'x_custom': self.headers.get_all('X-Custom'), 'length': len(body),
                           'sha': hashlib.sha256(body).hexdigest()}).encode()
        self.send_response(201 if self.command == 'POST' else 200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.send_header('Location', 'http://127.0.0.1:%d/v2.1/things/1' % self.server.server_address[1])
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = answer


def selftest(_argv):
    upstream = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Upstream)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    up_url = 'http://127.0.0.1:%d' % upstream.server_address[1]
    proxy = make_server('127.0.0.1:0', up_url + '/v2.1')
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    port = proxy.server_address[1]
    listen = '127.0.0.1:%d' % port
    results = []

    def check(name, ok, detail=''):
        results.append(ok)
        print('%s %s%s' % ('ok  ' if ok else 'FAIL', name, (': %s' % (detail,)) if detail and not ok else ''))

    def request(method, path, body=None, headers=None, conn=None, chunked=False):
        own = conn is None
        conn = conn or http.client.HTTPConnection('127.0.0.1', port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            if own:
                conn.close()

    def upstream_count():
        return len(_Upstream.seen)

    # 1. Forwarding: path under the upstream's base path, Host fixed, headers kept, Location rewritten.
    status, headers, body = request('GET', '/servers?x=1', headers={'X-Custom': 'a'})
    echo = json.loads(body)
    check('GET forwarded under the base path', status == 200 and echo['path'] == '/v2.1/servers?x=1', echo)
    check('Host set to the upstream', echo['host'] == '127.0.0.1:%d' % upstream.server_address[1], echo)
    check('headers kept', echo['x_custom'] == ['a'], echo)
    check('Location rewritten to the proxy', headers.get('Location') == 'http://127.0.0.1:%d/things/1' % port,
          headers.get('Location'))
    # 2. Bodies: a 5 MiB Content-Length body and a chunked one arrive intact.
    big = os.urandom(5 * 1024 * 1024)
    status, _h, body = request('POST', '/upload', body=big, headers={'Content-Type': 'application/octet-stream'})
    check('5 MiB request body streamed', status == 201 and json.loads(body)['sha'] == hashlib.sha256(big).hexdigest())
    pieces = [os.urandom(70000) for _ in range(5)]
    status, _h, body = request('PUT', '/chunked', body=iter(pieces), chunked=True)
    check('chunked request body', status == 200 and json.loads(body)['sha'] == hashlib.sha256(b''.join(pieces)).hexdigest())
    # 3. Streaming response: the client sees the first piece before the upstream sends the rest.
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    conn.request('GET', '/stream')
    response = conn.getresponse()
    first = response.read1(100)
    _Upstream.release.set()
    rest = response.read()
    conn.close()
    check('response streamed (not buffered)', first == b'first-piece' and rest.endswith(b'last') and len(rest) == 300004,
          (first, len(rest)))
    # 4. Keep-alive from the client, HEAD and 204.
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    a = request('GET', '/one', conn=conn)[0]
    b = request('HEAD', '/two', conn=conn)
    c = request('DELETE', '/empty', conn=conn)[0]
    d = request('GET', '/three', conn=conn)[0]
    conn.close()
    check('keep-alive, HEAD, 204', (a, b[0], b[2], c, d) == (200, 200, b'', 204, 200), (a, b[0], c, d))
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    times = []
    for _ in range(30):
        began = time.monotonic()
        request('GET', '/latency', conn=conn)
        times.append(time.monotonic() - began)
    conn.close()
    median = sorted(times)[len(times) // 2]
    check('no added delay (median < 20 ms; Nagle + delayed ACK would add 40)', median < 0.02, '%.1f ms' % (median * 1000))
    # 5. Injected status: answered by the proxy, not forwarded; control requests never faulted.
    control_request(listen, CONTROL + '/reset-counters', {})
    before = upstream_count()
    control_request(listen, CONTROL, {'error_rate': 1})
    status, headers, body = request('POST', '/servers', body=b'{"a": 1}')
    check('error_rate 1: 503 from the proxy', status == 503 and headers.get('X-Vmops-Fault') == 'injected', (status, body))
    check('... never forwarded', upstream_count() == before)
    state = control_request(listen, CONTROL)
    check('control not faulted; counters', state['counters'].get('injected_503') == 1 and
          state['by_method']['POST'].get('injected_503') == 1 and 'forwarded' not in state['counters'], state)
    control_request(listen, CONTROL, {'status': 429})
    status, headers, _b = request('GET', '/x')
    check('429 with Retry-After', status == 429 and headers.get('Retry-After') == '1', (status, headers))
    control_request(listen, CONTROL, {'status': 503, 'retry_after': 3})
    status, headers, _b = request('GET', '/x')
    check('503 with retry_after 3', status == 503 and headers.get('Retry-After') == '3', headers)
    # 6. Method filter.
    control_request(listen, CONTROL, {'methods': 'POST', 'retry_after': None})
    check('methods filter: GET forwarded', request('GET', '/x')[0] == 200)
    check('methods filter: POST faulted', request('POST', '/x', body=b'')[0] == 503)
    # 7. Resets: the client's connection is reset, nothing forwarded.
    control_request(listen, CONTROL, {'error_rate': 0, 'reset_rate': 1, 'methods': None})
    before = upstream_count()
    try:
        request('GET', '/x')
        check('reset_rate 1: connection reset', False, 'an answer came')
    except (ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError) as error:
        check('reset_rate 1: connection reset', isinstance(error, ConnectionResetError), repr(error))
    try:
        request('POST', '/x', body=os.urandom(3 * 1024 * 1024))
        check('reset during a large body', False, 'an answer came')
    except (ConnectionError, http.client.RemoteDisconnected):
        check('reset during a large body', True)
    check('... never forwarded', upstream_count() == before)
    # 8. Outages, both modes, and their end.
    control_request(listen, CONTROL, {'reset_rate': 0, 'outage_seconds': 0.6})
    check('outage: 503', request('GET', '/x')[0] == 503)
    time.sleep(0.7)
    check('outage over: forwarded', request('GET', '/x')[0] == 200)
    control_request(listen, CONTROL, {'outage_seconds': 30, 'outage_mode': 'reset'})
    try:
        request('GET', '/x')
        check('outage, reset mode', False, 'an answer came')
    except ConnectionError:
        check('outage, reset mode', True)
    state = control_request(listen, CONTROL, {'outage_seconds': 0})
    check('outage ended by outage_seconds 0', state['outage_left'] == 0 and request('GET', '/x')[0] == 200, state)
    # 9. Seeds: the same seed, the same decisions; the fraction about right.
    patterns = []
    for _run in range(2):
        control_request(listen, CONTROL, {'seed': 7, 'error_rate': 0.3, 'outage_mode': 'status'})
        patterns.append([request('GET', '/x')[0] for _ in range(60)])
    faulted = patterns[0].count(503)
    check('seed reproducible', patterns[0] == patterns[1] and 8 <= faulted <= 30, (faulted, patterns))
    # 10. Bad settings and requests.
    control_request(listen, CONTROL, {'error_rate': 0})
    check('bad setting refused', request('POST', CONTROL, body=b'{"error_rate": 2}')[0] == 400)
    check('unknown setting refused', request('POST', CONTROL, body=b'{"nope": 1}')[0] == 400)
    try:
        make_server('0.0.0.0:0', up_url)
        check('listen other than 127.0.0.1 refused', False)
    except SystemExit:
        check('listen other than 127.0.0.1 refused', True)
    # 11. An upstream that is gone: 502, counted.
    upstream.shutdown()
    upstream.server_close()
    status, _h, _b = request('GET', '/x')
    check('upstream down: 502', status == 502 and control_request(listen, CONTROL)['counters'].get('upstream_errors') == 1)
    proxy.shutdown()
    proxy.server_close()
    # 12. The command line: daemon, set, show, stop, max-seconds.
    import subprocess
    import tempfile
    work = tempfile.mkdtemp(prefix='faultproxy-selftest-')
    pid_file, log_file = os.path.join(work, 'proxy.pid'), os.path.join(work, 'proxy.log')
    me = [sys.executable, os.path.abspath(__file__)]
    start = subprocess.run(me + ['--listen', '127.0.0.1:0', '--upstream', up_url, '--pid-file', pid_file,
                                 '--log', log_file, '--daemon', 'error_rate=0.5'],
                           capture_output=True, text=True, timeout=10)
    info = json.loads(start.stdout) if start.returncode == 0 else {}
    check('daemon starts and returns', start.returncode == 0 and read_pid(pid_file) == info.get('pid'), start.stderr)
    if info:
        shown = subprocess.run(me + ['set', '--listen', info['listen'], 'methods=GET,PUT', 'outage_seconds=5'],
                               capture_output=True, text=True, timeout=10)
        state = json.loads(shown.stdout)
        check('set from the command line', state['settings']['methods'] == ['GET', 'PUT'] and
              state['settings']['error_rate'] == 0.5 and state['outage_left'] > 4, shown.stdout + shown.stderr)
        stop = subprocess.run(me + ['stop', '--pid-file', pid_file], capture_output=True, text=True, timeout=20)
        check('stop by pid file', json.loads(stop.stdout).get('stopped') and not is_proxy(info['pid'])
              and not os.path.exists(pid_file), stop.stdout + stop.stderr)
    began = time.monotonic()
    run = subprocess.run(me + ['--listen', '127.0.0.1:0', '--upstream', up_url, '--pid-file', pid_file,
                               '--max-seconds', '1'], capture_output=True, text=True, timeout=20)
    check('exits by itself after --max-seconds', run.returncode == 0 and time.monotonic() - began < 5
          and not os.path.exists(pid_file), run.stderr)
    refused = subprocess.run(me + ['--listen', '0.0.0.0:0', '--upstream', up_url, '--pid-file', pid_file],
                             capture_output=True, text=True, timeout=10)
    check('command line refuses 0.0.0.0', refused.returncode != 0 and 'loopback' in refused.stderr, refused.stderr)
    print('%d checks, %d failed' % (len(results), results.count(False)))
    return 0 if all(results) else 1


def main(argv):
    commands = {'set': lambda a: command_client('set', a), 'show': lambda a: command_client('show', a),
                'reset-counters': lambda a: command_client('reset-counters', a), 'stop': command_stop,
                'selftest': selftest}
    if argv and argv[0] in commands:
        return commands[argv[0]](argv[1:]) or 0
    serve(argv)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
