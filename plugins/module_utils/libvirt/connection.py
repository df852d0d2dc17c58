# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The connection keeper: every libvirt call of a run goes through one LibvirtConnection per URI.

libvirtd can restart under a run (an upgrade, a crash, a watchdog).  The guests keep running, but
every open connection to that libvirtd is dead, and so is every virDomain, pool or volume object
taken from one.  The keeper:

  * opens the connection, after registering libvirt's default event loop (so that domain events
    reach the run, and a dead connection is noticed as soon as its socket closes);
  * hands out the objects a run works with (domains, storage pools, volumes) wrapped in `Kept`,
    which knows how to find the object again on a new connection (a domain or pool by UUID, a
    volume by key);
  * when a call fails because the connection dropped, reopens it and retries a READ with
    full-jitter backoff (0.5 s doubling to 8 s) for at most `retry_budget` seconds, and never past
    the run's deadline (`deadline`, set by the backend's bound_by());
  * never repeats an ACTION that may have reached libvirtd, unless the caller's `verify` read on the
    new connection shows that it did not take effect; without `verify` it fails with `sent: maybe`.
    An action that provably never left (the client already knew the socket was closed) is sent
    again on the new connection;
  * registers event callbacks again on every new connection;
  * counts every libvirt call of the run (the backends' request_count()).

A dropped connection, as libvirt 9.0 reports it when libvirtd is stopped under an open one:
  * every call on the dead connection: VIR_ERR_INTERNAL_ERROR from VIR_FROM_RPC, "client socket is
    closed", raised by the client before anything is sent;
  * the first call, when no event loop has seen the socket close yet: VIR_ERR_SYSTEM_ERROR "Cannot
    write data: Broken pipe";
  * a call in flight (a migration): VIR_ERR_SYSTEM_ERROR "End of file while reading data:
    Input/output error";
  * opening while libvirtd is down: VIR_ERR_SYSTEM_ERROR "Failed to connect socket to ...: No such
    file or directory" (or "Connection refused").
The error code alone is not enough: a source libvirtd whose own peer-to-peer connection to a
migration destination dropped answers "client socket is closed" over a connection that is alive.
A failure is a drop only when `isAlive()` (a client-side check, no call to libvirtd) says the
connection is dead.

Streams (`newStream`) and snapshot objects are handed out as libvirt returns them: a stream dies
with its connection, and its copy fails; the caller reports it.

A host that stays away: once a call has waited out `retry_budget` without getting a connection back,
the keeper marks the host `unreachable` (with the last error).  Later calls then try once, without
waiting out the budget again (a drain that reads ten domains of a dead host must not wait ten budgets),
and the mark is cleared as soon as a call gets through.  Connections spawned for worker threads share it.

A URI may carry a password in its userinfo (qemu+tcp://user:pw@host/system).  No message, label or
detail of the keeper holds it: `redact_uri()` replaces it with ********, and `uri_secrets()` gives
the passwords the module hides everywhere else in its output.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import random
import re
import threading
import time
import traceback

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import (
    ConnectionFailed, RequestFailed, ServiceUnavailable)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.retry import DEFAULT_RETRY_BUDGET, RetryWindow, backoff, budget_seconds

LIBRARY_IMPORT_ERROR = None
try:
    import libvirt
except ImportError:
    libvirt = None
    LIBRARY_IMPORT_ERROR = traceback.format_exc()

LIBRARY = 'libvirt-python'
HAS_LIBRARY = libvirt is not None


CONNECTION, DOMAIN, POOL, VOLUME = 'virConnect', 'virDomain', 'virStoragePool', 'virStorageVol'

# Calls that only read: retried on a new connection after a drop.  (A pool refresh only re-reads
# its directory: repeating it is harmless.)
READS = {
    CONNECTION: frozenset((
        'getCapabilities', 'getHostname', 'getFreeMemory', 'getInfo', 'getVersion', 'getLibVersion', 'getType',
        'getSysinfo', 'getAllDomainStats', 'domainListGetStats', 'listAllDomains', 'lookupByName',
        'lookupByUUIDString', 'lookupByID', 'listAllStoragePools', 'storagePoolLookupByName',
        'storagePoolLookupByTargetPath', 'storagePoolLookupByUUIDString', 'storageVolLookupByPath',
        'storageVolLookupByKey')),
    DOMAIN: frozenset((
        'state', 'info', 'isActive', 'isPersistent', 'isUpdated', 'hasManagedSaveImage', 'XMLDesc', 'metadata',
        'jobInfo', 'jobStats', 'blockInfo', 'blockStats', 'memoryStats', 'maxMemory', 'maxVcpus', 'ID', 'OSType',
        'autostart', 'controlInfo', 'migrateGetMaxSpeed', 'snapshotLookupByName', 'listAllSnapshots',
        'snapshotNum', 'hasCurrentSnapshot', 'checkpointLookupByName', 'listAllCheckpoints',
        'backupGetXMLDesc')),
    POOL: frozenset(('XMLDesc', 'info', 'isActive', 'isPersistent', 'autostart', 'numOfVolumes',
                     'listAllVolumes', 'storageVolLookupByName', 'refresh')),
    VOLUME: frozenset(('XMLDesc', 'info', 'infoFlags', 'path', 'storagePoolLookupByVolume')),
}
# Answered by the client library itself: no call to libvirtd, nothing to retry or count.
LOCAL = {
    CONNECTION: frozenset(('newStream',)),
    DOMAIN: frozenset(('name', 'UUIDString', 'UUID')),
    POOL: frozenset(('name', 'UUIDString', 'UUID')),
    VOLUME: frozenset(('name', 'key')),
}
ONE, LIST, STATS = 'one', 'list', 'stats'
# What a call returns that the keeper must be able to find again on a new connection.
RETURNS = {
    (CONNECTION, 'lookupByName'): (DOMAIN, ONE), (CONNECTION, 'lookupByUUIDString'): (DOMAIN, ONE),
    (CONNECTION, 'lookupByID'): (DOMAIN, ONE), (CONNECTION, 'defineXML'): (DOMAIN, ONE),
    (CONNECTION, 'defineXMLFlags'): (DOMAIN, ONE), (CONNECTION, 'createXML'): (DOMAIN, ONE),
    (CONNECTION, 'listAllDomains'): (DOMAIN, LIST), (CONNECTION, 'getAllDomainStats'): (DOMAIN, STATS),
    (CONNECTION, 'domainListGetStats'): (DOMAIN, STATS),
    (CONNECTION, 'storagePoolLookupByName'): (POOL, ONE), (CONNECTION, 'storagePoolLookupByTargetPath'): (POOL, ONE),
    (CONNECTION, 'storagePoolLookupByUUIDString'): (POOL, ONE), (CONNECTION, 'storagePoolCreateXML'): (POOL, ONE),
    (CONNECTION, 'storagePoolDefineXML'): (POOL, ONE), (CONNECTION, 'listAllStoragePools'): (POOL, LIST),
    (CONNECTION, 'storageVolLookupByPath'): (VOLUME, ONE), (CONNECTION, 'storageVolLookupByKey'): (VOLUME, ONE),
    (POOL, 'storageVolLookupByName'): (VOLUME, ONE), (POOL, 'createXML'): (VOLUME, ONE),
    (POOL, 'createXMLFrom'): (VOLUME, ONE), (POOL, 'listAllVolumes'): (VOLUME, LIST),
    (VOLUME, 'storagePoolLookupByVolume'): (POOL, ONE),
}
# How an object of a dead connection is found on the new one: (its identity, the connection's look-up).
FIND_AGAIN = {
    DOMAIN: (lambda raw: raw.UUIDString(), 'lookupByUUIDString'),
    POOL: (lambda raw: raw.UUIDString(), 'storagePoolLookupByUUIDString'),
    VOLUME: (lambda raw: raw.key(), 'storageVolLookupByKey'),
}
NOUNS = {CONNECTION: 'connection', DOMAIN: 'domain', POOL: 'storage pool', VOLUME: 'volume'}

DROP_CODES = ()
if HAS_LIBRARY:
    DROP_CODES = (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_ERR_RPC,
                  libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN)

_USERINFO = re.compile(r'^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#@]*)@')
REDACTED = '********'


def uri_secrets(uri):
    """The passwords written into a URI's userinfo (user:password@host): [] when there is none."""
    match = _USERINFO.match(uri) if isinstance(uri, str) else None
    if match is None or ':' not in match.group(2):
        return []
    secret = match.group(2).split(':', 1)[1]
    return [secret] if secret else []


def error_text(error):
    """The message of a libvirt error or of one of the collection's errors (any other: its text)."""
    if libvirt is not None and isinstance(error, libvirt.libvirtError):
        return error.get_error_message()
    return getattr(error, 'msg', None) or str(error)


def redact_uri(uri):
    """The URI with the password of its userinfo replaced by ******** (the user name stays)."""
    if not uri_secrets(uri):
        return uri
    match = _USERINFO.match(uri)
    user = match.group(2).split(':', 1)[0]
    return '%s%s:%s@%s' % (match.group(1), user, REDACTED, uri[match.end():])


_EVENT_LOOP = {'started': False}
_EVENT_LOOP_LOCK = threading.Lock()


def start_event_loop():
    """libvirt delivers events (and notices closed sockets) only in a process that runs its event
    loop, registered before the connection is opened; once per process, in a daemon thread."""
    with _EVENT_LOOP_LOCK:
        if _EVENT_LOOP['started']:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run():
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name='libvirt-events', daemon=True).start()
        _EVENT_LOOP['started'] = True


def _quiet(ctx, error):  # signature fixed by libvirt; pylint: disable=unused-argument
    """libvirt prints every error to stderr by default; the collection reports them itself."""


def _alive(conn):
    """isAlive() is answered by the client library (no call to libvirtd); an object without it is alive."""
    is_alive = getattr(conn, 'isAlive', None)
    if is_alive is None:
        return True
    try:
        return bool(is_alive())
    except Exception:  # pylint: disable=broad-except
        return False


class _Counter(object):
    """The run's libvirt calls, shared by a keeper and the connections it spawns for worker threads."""

    def __init__(self):
        self.calls = 0
        self._lock = threading.Lock()

    def add(self, calls=1):
        with self._lock:
            self.calls += calls


class _Dropped(Exception):
    """One attempt met a dropped connection.  sent: 'no' (provably never reached libvirtd) or 'maybe'."""

    def __init__(self, sent, error):
        super(_Dropped, self).__init__(error.get_error_message())
        self.sent = sent
        self.code = error.get_error_code()
        self.message = error.get_error_message()


class Kept(object):
    """A domain, storage pool or volume of a kept connection.  Calls go through the keeper; after a
    reconnect the object is looked up again on the new connection (by UUID, or a volume by key).
    name(), UUIDString() and key() are answered locally, as libvirt does."""

    def __init__(self, keeper, raw, kind):
        self._keeper = keeper
        self._raw = raw
        self._kind = kind
        self._generation = keeper.generation

    def __getattr__(self, method):
        if method.startswith('_'):
            raise AttributeError(method)
        if method in LOCAL[self._kind]:
            return getattr(self._raw, method)
        if libvirt is not None and not hasattr(getattr(libvirt, self._kind), method):
            raise AttributeError('%s has no method %s' % (self._kind, method))

        def call(*args):
            return self._keeper.call(self, method, args)
        call.__name__ = method
        return call

    def __repr__(self):
        return '<Kept %s %s>' % (self._kind, self._describe())

    def _describe(self):
        try:
            return '%s %s' % (NOUNS[self._kind], self._raw.name())
        except Exception:  # pylint: disable=broad-except
            return NOUNS[self._kind]


def act(target, method, args=(), verify=None):
    """An action on a Kept object through its keeper (LibvirtConnection.act); on any other object (a
    test's stand-in) the plain call."""
    if isinstance(target, Kept):
        return target._keeper.act(target, method, args, verify)
    return getattr(target, method)(*args)


class LibvirtConnection(object):
    """One libvirt connection of a run, kept open across libvirtd restarts (see the module docstring).

    Connection methods are called on the keeper itself (`keeper.lookupByName(name)`); the objects they
    return are `Kept`.  `opener` (uri -> connection) replaces libvirt.open in tests; the event loop and
    the error handler are registered only for the real library."""

    def __init__(self, uri, retry_budget=DEFAULT_RETRY_BUDGET, label=None, opener=None, clock=time.monotonic,
                 sleep=time.sleep, jitter=random.random, role=None, counter=None, deadline=None, connect=True):
        self.uri = uri
        self.label = label or redact_uri(uri)
        self.role = role                # 'source', 'target' ...: for messages
        self.retry_budget = budget_seconds(retry_budget)
        self.deadline = deadline        # a core Deadline: no retry goes past the run's own deadline
        self.clock, self.sleep, self.jitter = clock, sleep, jitter
        self.counter = counter or _Counter()
        self.generation = 0             # +1 for each connection opened; a Kept of an older one is found again
        self.drops = 0                  # connections of this keeper found dead
        self.unreachable = None         # the last error, once a call waited out retry_budget in vain
        self._opener = opener
        self._conn = None
        self._events = []               # [event_id, callback, opaque, registration id or None]
        self._lock = threading.RLock()
        self._closed = False
        if opener is None:
            libvirt.registerErrorHandler(_quiet, None)
            start_event_loop()          # before open(): the connection then gets events
        if not connect:
            return
        try:
            self._open()
        except libvirt.libvirtError as error:
            # The first connection is not retried: a wrong URI must fail at once, not after retry_budget.
            raise ConnectionFailed('Cannot connect to %slibvirt at %s: %s'
                                   % ('the %s ' % role if role else '', self.label, error.get_error_message()),
                                   uri=redact_uri(uri), libvirt_error_code=error.get_error_code())

    # --- the run's view

    def request_count(self):
        return self.counter.calls

    def count(self, calls=1):
        self.counter.add(calls)

    def alive(self):
        """Whether the current connection is open, as far as the client knows (no call to libvirtd)."""
        with self._lock:
            return self._conn is not None and _alive(self._conn)

    def spawn(self):
        """Another connection to the same URI, for a worker thread whose calls block (a migration):
        same budget, deadline and counter; opening it is retried like a reconnect.  The worker closes it."""
        other = LibvirtConnection(self.uri, self.retry_budget, self.label, self._opener, self.clock, self.sleep,
                                  self.jitter, self.role, self.counter, self.deadline, connect=False)
        other.unreachable = self.unreachable
        try:
            other._retrying(other._live, CONNECTION, 'open', None, True, None)
        finally:
            self.unreachable = other.unreachable
        return other

    def close(self):
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is None:
                return
            if _alive(conn):
                for entry in self._events:
                    if entry[3] is not None:
                        try:
                            conn.domainEventDeregisterAny(entry[3])
                        except libvirt.libvirtError:
                            pass
            try:
                conn.close()
            except libvirt.libvirtError:
                pass

    def __getattr__(self, method):
        """The connection's own calls (lookupByName, defineXML, storageVolLookupByPath ...)."""
        if method.startswith('_'):
            raise AttributeError(method)
        if libvirt is not None and not hasattr(libvirt.virConnect, method):
            raise AttributeError('virConnect has no method %s' % method)

        def call(*args):
            if method in LOCAL[CONNECTION]:     # no call to libvirtd, but on a connection that is open
                return self._retrying(lambda: getattr(self._live(), method)(*args), CONNECTION, method, None,
                                      True, None)
            return self.call(None, method, args)
        call.__name__ = method
        return call

    # --- events

    def register_event(self, event_id, callback, opaque=None):
        """domainEventRegisterAny for every domain, now and on every connection that replaces this one.
        Events of the time the connection was down are lost (libvirtd does not keep them)."""
        with self._lock:
            entry = [event_id, callback, opaque, None]
            self._events.append(entry)
            self._register(entry, self._conn)

    def _register(self, entry, conn):
        self.count()
        try:
            entry[3] = conn.domainEventRegisterAny(None, entry[0], entry[1], entry[2])
        except libvirt.libvirtError:
            entry[3] = None
            if _alive(conn):
                raise

    # --- calls

    def call(self, target, method, args=(), verify=None):
        """One libvirt call on `target` (a Kept, or None for the connection): a read is retried across
        a reconnect, an action is sent again only as the module docstring says.  Errors that are not a
        drop are libvirt's own (libvirt.libvirtError), as the caller knows them."""
        kind = target._kind if target is not None else CONNECTION
        read = method in READS[kind]
        return self._retrying(lambda: self._attempt(target, kind, method, args), kind, method, target, read, verify)

    def act(self, target, method, args=(), verify=None):
        """An action with `verify`: after an ambiguous drop, verify() (reads on the new connection) says
        whether it took effect (True: done, returns None) or not (False: sent again)."""
        return self.call(target, method, args, verify=verify)

    def _retrying(self, attempt_once, kind, method, target, read, verify):
        # A host already found unreachable in this run gets one try, not another whole budget.
        window = RetryWindow(0 if self.unreachable else self.retry_budget, self.deadline, self.clock)
        attempt = 0
        while True:
            attempt += 1
            try:
                value = attempt_once()
            except _Dropped as dropped:
                failure = dropped
            else:
                self.unreachable = None
                return value
            if not read and failure.sent != 'no':
                if verify is None:
                    raise self._error(RequestFailed, kind, method, target, failure, attempt,
                                      ' It may have reached libvirtd before the connection dropped, so it was not '
                                      'sent again; look at the %s to see whether it took effect.' % NOUNS[kind])
                if self._verified(verify, kind, method, target, failure, attempt):
                    return None
            pause = backoff(attempt, self.jitter)
            if not window.allows(pause):
                if self.unreachable:
                    extra = ' It could not be reached earlier in this run either (retry_budget %s s spent then).' \
                        % self.retry_budget
                else:
                    extra = ' The connection could not be used again within %.1f s (retry_budget %s s).' \
                        % (window.elapsed(), self.retry_budget)
                self.unreachable = failure.message
                raise self._error(ServiceUnavailable, kind, method, target, failure, attempt, extra)
            self.sleep(pause)

    def _verified(self, verify, kind, method, target, failure, attempt):
        try:
            return bool(verify())
        except (RequestFailed, ConnectionFailed) as error:
            raise self._error(ServiceUnavailable, kind, method, target, failure, attempt,
                              ' It may have reached libvirtd, and reading whether it took effect also failed: %s'
                              % error.msg)

    def _attempt(self, target, kind, method, args):
        conn = self._live()
        raw = conn if target is None else self._raw(target, conn)
        args = tuple(self._unwrap(arg, conn) for arg in args)
        self.count()
        try:
            value = getattr(raw, method)(*args)
        except libvirt.libvirtError as error:
            self._check_drop(conn, error)
            raise
        return self._wrap(kind, method, value)

    def _unwrap(self, arg, conn):
        """A Kept argument (a volume to clone from ...) as the libvirt object its own connection has now."""
        if not isinstance(arg, Kept):
            return arg
        if arg._keeper is self:
            return self._raw(arg, conn)
        return arg._keeper._raw(arg, arg._keeper._live())

    def _raw(self, kept, conn):
        """The libvirt object of `kept` on the current connection (looked up again after a reconnect)."""
        if kept._generation != self.generation:
            identity, lookup = FIND_AGAIN[kept._kind]
            self.count()
            try:
                kept._raw = getattr(conn, lookup)(identity(kept._raw))
            except libvirt.libvirtError as error:
                self._check_drop(conn, error)
                raise
            kept._generation = self.generation
        return kept._raw

    def _check_drop(self, conn, error):
        if error.get_error_code() in DROP_CODES and not _alive(conn):
            never_sent = (error.get_error_code() == libvirt.VIR_ERR_INTERNAL_ERROR
                          and error.get_error_domain() == libvirt.VIR_FROM_RPC)
            raise _Dropped('no' if never_sent else 'maybe', error)

    def _wrap(self, kind, method, value):
        returned = RETURNS.get((kind, method))
        if returned is None or value is None:
            return value
        result_kind, shape = returned
        if shape == ONE:
            return Kept(self, value, result_kind)
        if shape == LIST:
            return [Kept(self, item, result_kind) for item in value]
        return [(Kept(self, item, result_kind), stats) for item, stats in value]

    def _live(self):
        """The current connection; a dead one is replaced first (an open that fails is a drop never sent)."""
        with self._lock:
            if self._conn is not None and _alive(self._conn):
                return self._conn
            if self._closed:
                raise ConnectionFailed('The connection to libvirt at %s was already closed.' % self.label,
                                       uri=redact_uri(self.uri))
            if self._conn is not None:
                self.drops += 1
                old, self._conn = self._conn, None
                try:
                    old.close()
                except libvirt.libvirtError:
                    pass
            try:
                self._open()
            except libvirt.libvirtError as error:
                raise _Dropped('no', error)
            for entry in self._events:
                self._register(entry, self._conn)
            return self._conn

    def _open(self):
        opener = self._opener or libvirt.open
        self.count()
        conn = opener(self.uri)
        self._conn = conn
        self.generation += 1
        return conn

    def _error(self, cls, kind, method, target, failure, attempt, extra):
        what = target._describe() if target is not None else 'connection'
        return cls('libvirt at %s: %s.%s on %s failed, the connection dropped (%s) after %d attempt%s.%s'
                   % (self.label, kind, method, what, failure.message, attempt, '' if attempt == 1 else 's', extra),
                   service='libvirt', method=method, path=what, http_status=None, service_message=failure.message,
                   attempts=attempt, sent=failure.sent, uri=redact_uri(self.uri.split('?', 1)[0]),
                   libvirt_error_code=failure.code)


__all__ = ['LibvirtConnection', 'Kept', 'act', 'error_text', 'start_event_loop', 'libvirt', 'HAS_LIBRARY', 'LIBRARY',
           'LIBRARY_IMPORT_ERROR', 'redact_uri', 'uri_secrets']
