# -*- coding: utf-8 -*-
"""The connection keeper (module_utils/libvirt/connection.py) against a fake libvirtd that restarts.

FakeDaemon is one host's libvirtd: its domains, the connections opened to it, the event callbacks
registered on them.  `restart(down_for=N)` kills every open connection (as libvirtd's exit does) and
refuses the next N opens with the error a socket without a daemon gives.  Time is the fake clock:
the keeper's backoff never really sleeps, and every pause is recorded.  The errors are the ones
libvirt 9.0 gives (see the keeper's docstring).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

libvirt = pytest.importorskip('libvirt')

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.engine import StateRequest, ensure_state  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import (  # noqa: E402
    ConnectionFailed, RequestFailed, ServiceUnavailable)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import Deadline  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt import connection, power  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.backend import LibvirtBackend  # noqa: E402

URI = 'qemu+unix:///system?socket=/h1/libvirt-sock'
UUID = '0b8c5e2e-2f5e-4f5b-9d43-5ad4b1f0c001'
RUNNING, SHUTOFF = libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_SHUTOFF


def error(code, text, domain=libvirt.VIR_FROM_RPC):
    failure = libvirt.libvirtError(text)
    failure.err = (code, domain, text, 2, None, None, None, 0, 0)
    return failure


def socket_closed():
    """What every call on a connection whose libvirtd went away raises (before sending anything)."""
    return error(libvirt.VIR_ERR_INTERNAL_ERROR, 'internal error: client socket is closed')


def end_of_file():
    """What a call in flight when libvirtd went away raises (it may have been carried out)."""
    return error(libvirt.VIR_ERR_SYSTEM_ERROR, 'End of file while reading data: Input/output error')


class FakeDaemon(object):

    def __init__(self):
        self.domains = {UUID: {'name': 'web1', 'state': RUNNING}}
        self.conns = []
        self.refuse_opens = 0
        self.opens = 0
        self.received = []          # (method, domain uuid) of every action that reached the daemon
        self.callbacks = {}         # registration id -> (conn, callback)
        self.next_id = 0
        self.drop_during = None     # method name: the daemon goes away while carrying it out
        self.drop_before = None     # method name: the daemon went away just before it was sent
        self.done_before_drop = True

    def open(self, uri):
        if self.refuse_opens:
            self.refuse_opens -= 1
            raise error(libvirt.VIR_ERR_SYSTEM_ERROR, "Failed to connect socket to '/h1/libvirt-sock': "
                                                      "No such file or directory")
        self.opens += 1
        conn = FakeConn(self)
        self.conns.append(conn)
        return conn

    def restart(self, down_for=0):
        for conn in self.conns:
            conn.alive = False
        self.callbacks = {}
        self.refuse_opens = down_for

    def reboot_event(self, dom_uuid):
        for conn, callback in list(self.callbacks.values()):
            callback(conn, FakeDom(conn, dom_uuid), None)


class FakeConn(object):

    def __init__(self, daemon):
        self.daemon = daemon
        self.alive = True
        self.closed = False

    def isAlive(self):
        return 1 if self.alive else 0

    def rpc(self):
        if not self.alive:
            raise socket_closed()

    def close(self):
        self.closed = True
        return 0

    def getHostname(self):
        self.rpc()
        return 'vmops-h1'

    def lookupByUUIDString(self, text):
        self.rpc()
        if text not in self.daemon.domains:
            raise error(libvirt.VIR_ERR_NO_DOMAIN, 'Domain not found', libvirt.VIR_FROM_QEMU)
        return FakeDom(self, text)

    def lookupByName(self, name):
        self.rpc()
        for dom_uuid, dom in self.daemon.domains.items():
            if dom['name'] == name:
                return FakeDom(self, dom_uuid)
        raise error(libvirt.VIR_ERR_NO_DOMAIN, 'Domain not found', libvirt.VIR_FROM_QEMU)

    def domainEventRegisterAny(self, dom, event_id, callback, opaque):
        self.rpc()
        self.daemon.next_id += 1
        self.daemon.callbacks[self.daemon.next_id] = (self, callback)
        return self.daemon.next_id

    def domainEventDeregisterAny(self, callback_id):
        self.daemon.callbacks.pop(callback_id, None)


class FakeDom(object):

    def __init__(self, conn, dom_uuid):
        self.conn, self.uuid = conn, dom_uuid
        self.name_ = conn.daemon.domains[dom_uuid]['name']     # kept client-side, as libvirt does

    def name(self):
        return self.name_

    def UUIDString(self):
        return self.uuid

    def record(self):
        return self.conn.daemon.domains[self.uuid]

    def state(self):
        self.conn.rpc()
        if self.uuid not in self.conn.daemon.domains:
            raise error(libvirt.VIR_ERR_NO_DOMAIN, 'Domain not found', libvirt.VIR_FROM_QEMU)
        return [self.record()['state'], 1]

    def hasManagedSaveImage(self, flags):
        self.conn.rpc()
        return False

    def isActive(self):
        self.conn.rpc()
        return self.record()['state'] != SHUTOFF

    def _action(self, method, effect):
        daemon = self.conn.daemon
        if daemon.drop_before == method:
            daemon.drop_before = None
            daemon.restart()
        self.conn.rpc()
        daemon.received.append((method, self.uuid))
        if daemon.drop_during == method:
            daemon.drop_during = None
            if daemon.done_before_drop:
                effect()
            daemon.restart()
            raise end_of_file()
        effect()
        return 0

    def create(self):
        return self._action('create', lambda: self.record().update(state=RUNNING))

    def shutdown(self):
        return self._action('shutdown', lambda: self.record().update(state=SHUTOFF))

    def destroy(self):
        return self._action('destroy', lambda: self.record().update(state=SHUTOFF))

    def reboot(self, flags):
        return self._action('reboot', lambda: None)


def keeper(daemon, clock, budget=60, **kwargs):
    return connection.LibvirtConnection(URI, budget, label='h1', opener=daemon.open, clock=clock,
                                        sleep=clock.sleep, jitter=lambda: 1.0, **kwargs)


# --- reads -------------------------------------------------------------------------------------

def test_a_read_is_retried_on_a_new_connection_once_libvirtd_is_back(clock):
    daemon = FakeDaemon()
    kept = keeper(daemon, clock)
    dom = kept.lookupByName('web1')
    old_conn = daemon.conns[0]
    daemon.restart(down_for=3)          # three opens fail while libvirtd is down
    assert dom.state() == [RUNNING, 1]
    assert clock.sleeps == [0.5, 1.0, 2.0]       # full-jitter backoff at its ceiling (jitter 1.0)
    assert daemon.opens == 2 and kept.drops == 1 and old_conn.closed
    assert dom._raw.conn is daemon.conns[1]      # the domain was looked up again, by UUID, on the new one


def test_the_backoff_is_capped_at_8_seconds(clock):
    daemon = FakeDaemon()
    kept = keeper(daemon, clock)
    daemon.restart(down_for=8)
    assert kept.getHostname() == 'vmops-h1'
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]


def test_the_backoff_is_jittered(clock):
    daemon = FakeDaemon()
    kept = connection.LibvirtConnection(URI, 60, opener=daemon.open, clock=clock, sleep=clock.sleep,
                                        jitter=iter([0.2, 0.9, 0.5]).__next__)
    daemon.restart(down_for=3)
    kept.getHostname()
    assert clock.sleeps == [0.1, 0.9, 1.0]


def test_a_libvirtd_that_never_comes_back_ends_within_the_budget(clock):
    daemon = FakeDaemon()
    kept = keeper(daemon, clock, budget=10)
    dom = kept.lookupByName('web1')
    daemon.restart(down_for=1000)
    started = clock.now
    with pytest.raises(ServiceUnavailable) as info:
        dom.state()
    assert clock.now - started <= 10
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0]          # the next pause (8 s) would pass the budget
    details = info.value.details
    assert details['service'] == 'libvirt' and details['method'] == 'state' and details['sent'] == 'no'
    assert details['attempts'] == 5 and details['http_status'] is None
    assert details['uri'] == 'qemu+unix:///system' and 'retry_budget 10' in info.value.msg
    assert 'No such file or directory' in details['service_message']


def test_a_host_found_unreachable_is_tried_once_afterwards_until_it_answers(clock):
    daemon = FakeDaemon()
    kept = keeper(daemon, clock, budget=10)
    dom = kept.lookupByName('web1')
    daemon.restart(down_for=1000)
    with pytest.raises(ServiceUnavailable):
        dom.state()
    assert kept.unreachable and 'No such file or directory' in kept.unreachable
    waited = len(clock.sleeps)
    with pytest.raises(ServiceUnavailable) as info:
        kept.getHostname()                       # the next call: one try, no second budget
    assert len(clock.sleeps) == waited and 'could not be reached earlier in this run' in info.value.msg
    spawned_refused = daemon.opens
    with pytest.raises(ServiceUnavailable):
        kept.spawn()                             # a worker's connection shares what is known
    assert len(clock.sleeps) == waited and daemon.opens == spawned_refused
    daemon.refuse_opens = 0
    assert dom.state() == [RUNNING, 1] and kept.unreachable is None


def test_a_password_in_the_uri_is_in_no_label_message_or_detail(clock):
    daemon = FakeDaemon()
    uri = 'qemu+tcp://admin:pa55@10.0.0.1/system'
    assert connection.uri_secrets(uri) == ['pa55'] and connection.uri_secrets('qemu+tcp://admin@h/system') == []
    assert connection.redact_uri(uri) == 'qemu+tcp://admin:********@10.0.0.1/system'
    assert connection.redact_uri('qemu:///system') == 'qemu:///system'
    kept = connection.LibvirtConnection(uri, 10, opener=daemon.open, clock=clock, sleep=clock.sleep,
                                        jitter=lambda: 1.0)
    assert kept.label == 'qemu+tcp://admin:********@10.0.0.1/system'
    daemon.restart(down_for=1000)
    with pytest.raises(ServiceUnavailable) as info:
        kept.getHostname()
    assert 'pa55' not in info.value.msg and 'pa55' not in str(info.value.details)
    daemon.refuse_opens = 1
    with pytest.raises(ConnectionFailed) as info:
        connection.LibvirtConnection(uri, 10, opener=daemon.open, clock=clock, sleep=clock.sleep)
    assert 'pa55' not in info.value.msg and 'pa55' not in str(info.value.details)


def test_no_retry_goes_past_the_runs_deadline(clock):
    daemon = FakeDaemon()
    kept = keeper(daemon, clock, budget=60)
    kept.deadline = Deadline(3, clock=clock)
    daemon.restart(down_for=1000)
    with pytest.raises(ServiceUnavailable):
        kept.getHostname()
    assert sum(clock.sleeps) <= 3


def test_the_first_open_is_not_retried(clock):
    daemon = FakeDaemon()
    daemon.refuse_opens = 1
    with pytest.raises(ConnectionFailed) as info:
        keeper(daemon, clock, role='source')
    assert 'Cannot connect to the source libvirt' in info.value.msg and clock.sleeps == []


def test_an_error_that_is_not_a_drop_is_libvirts_own(clock):
    daemon = FakeDaemon()
    kept = keeper(daemon, clock)
    with pytest.raises(libvirt.libvirtError) as info:
        kept.lookupByUUIDString('00000000-0000-0000-0000-000000000000')
    assert info.value.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN and clock.sleeps == []


def test_a_connection_error_over_a_live_connection_is_not_our_drop(clock):
    """A source libvirtd whose peer-to-peer connection to a migration destination dropped answers
    "client socket is closed" over a connection that is alive: that is the destination's failure."""
    daemon = FakeDaemon()
    kept = keeper(daemon, clock)
    dom = kept.lookupByName('web1')

    def peer_lost(*args):
        raise socket_closed()
    dom._raw.migrateToURI3 = peer_lost
    with pytest.raises(libvirt.libvirtError):
        dom.migrateToURI3('qemu+tcp://h2/system', {}, 0)
    assert daemon.opens == 1 and clock.sleeps == []


def test_a_domain_gone_while_libvirtd_was_down_reads_as_not_found(clock):
    daemon = FakeDaemon()
    backend = LibvirtBackend(URI, connection=keeper(daemon, clock))
    dom = backend.find('web1')
    daemon.restart()
    del daemon.domains[UUID]
    assert backend.observe(dom).state == states.ABSENT


# --- actions ------------------------------------------------------------------------------------

def test_an_action_on_a_connection_known_dead_is_sent_once_on_a_new_one(clock):
    daemon = FakeDaemon()
    kept = keeper(daemon, clock)
    dom = kept.lookupByName('web1')
    daemon.domains[UUID]['state'] = SHUTOFF
    daemon.restart()
    dom.create()
    assert daemon.received == [('create', UUID)] and daemon.domains[UUID]['state'] == RUNNING


def test_an_action_that_provably_never_left_is_sent_again(clock):
    daemon = FakeDaemon()
    kept = keeper(daemon, clock)
    dom = kept.lookupByName('web1')
    daemon.drop_before = 'shutdown'     # the client finds the socket closed as it sends
    dom.shutdown()
    assert daemon.received == [('shutdown', UUID)] and daemon.domains[UUID]['state'] == SHUTOFF
    assert kept.drops == 1


def test_an_action_that_may_have_reached_libvirtd_is_not_sent_again(clock):
    daemon = FakeDaemon()
    kept = keeper(daemon, clock)
    dom = kept.lookupByName('web1')
    daemon.drop_during = 'reboot'
    with pytest.raises(RequestFailed) as info:
        dom.reboot(0)
    assert daemon.received == [('reboot', UUID)]
    assert info.value.details['sent'] == 'maybe' and 'not sent again' in info.value.msg
    assert not isinstance(info.value, ServiceUnavailable)


def test_an_action_whose_re_read_shows_it_took_effect_is_not_sent_again(clock):
    daemon = FakeDaemon()
    kept = keeper(daemon, clock)
    dom = kept.lookupByName('web1')
    daemon.drop_during = 'destroy'      # carried out, then libvirtd went away before answering
    power.destroy(dom)
    assert daemon.received == [('destroy', UUID)] and daemon.domains[UUID]['state'] == SHUTOFF


def test_an_action_whose_re_read_shows_it_did_not_take_effect_is_sent_again(clock):
    daemon = FakeDaemon()
    kept = keeper(daemon, clock)
    dom = kept.lookupByName('web1')
    daemon.domains[UUID]['state'] = SHUTOFF
    daemon.drop_during, daemon.done_before_drop = 'create', False
    power.start(dom)
    assert daemon.received == [('create', UUID), ('create', UUID)]
    assert daemon.domains[UUID]['state'] == RUNNING


def test_a_verify_read_that_cannot_be_made_ends_the_action_as_unavailable(clock):
    daemon = FakeDaemon()
    kept = keeper(daemon, clock, budget=5)
    dom = kept.lookupByName('web1')
    daemon.drop_during = 'destroy'
    original = daemon.restart
    daemon.restart = lambda down_for=0: original(down_for=1000)      # and it does not come back
    with pytest.raises(ServiceUnavailable) as info:
        power.destroy(dom)
    assert info.value.details['sent'] == 'maybe' and 'reading whether it took effect also failed' in info.value.msg


# --- events and counting -----------------------------------------------------------------------

def test_event_callbacks_are_registered_again_on_the_new_connection(clock):
    daemon = FakeDaemon()
    backend = LibvirtBackend(URI, connection=keeper(daemon, clock))
    dom = backend.find('web1')
    daemon.restart(down_for=2)
    assert daemon.callbacks == {}
    backend.observe(dom)                 # the first call after the drop reconnects
    assert len(daemon.callbacks) == 1
    daemon.reboot_event(UUID)
    assert backend.observe(dom).details['reboots_seen'] == 1
    backend.close()
    assert daemon.callbacks == {}        # deregistered on close


def test_every_call_is_counted_with_the_reconnect(clock):
    daemon = FakeDaemon()
    kept = keeper(daemon, clock)
    assert kept.request_count() == 1                 # the open
    dom = kept.lookupByName('web1')
    dom.name(), dom.UUIDString()                     # answered locally
    assert kept.request_count() == 2
    dom.state()
    assert kept.request_count() == 3
    daemon.restart(down_for=1)
    dom.state()
    # a failed open, an open, the look-up by UUID, the state read
    assert kept.request_count() == 7
    spawned = kept.spawn()
    assert kept.request_count() == 8 and spawned.request_count() == 8


def test_a_spawned_connection_waits_for_libvirtd_like_a_reconnect(clock):
    daemon = FakeDaemon()
    kept = keeper(daemon, clock)
    daemon.restart(down_for=2)
    spawned = kept.spawn()
    assert spawned.getHostname() == 'vmops-h1' and clock.sleeps == [0.5, 1.0]


# --- a run of instance_state across a libvirtd restart -----------------------------------------

def test_instance_state_waits_out_a_libvirtd_restart_during_its_wait(clock, monkeypatch):
    """The guest takes a few polls to shut down; libvirtd restarts (down for two opens) in between."""
    daemon = FakeDaemon()
    backend = LibvirtBackend(URI, connection=keeper(daemon, clock))
    reads = {'n': 0}
    original_state = FakeDom.state

    def slow_guest(dom):
        reads['n'] += 1
        if reads['n'] == 3:
            daemon.restart(down_for=2)          # this read meets the closed socket
        if reads['n'] == 6:
            dom.record()['state'] = SHUTOFF
        return original_state(dom)
    monkeypatch.setattr(FakeDom, 'state', slow_guest)
    monkeypatch.setattr(FakeDom, 'shutdown', lambda dom: dom._action('shutdown', lambda: None))
    request = StateRequest(identifier='web1', wanted=states.STOPPED, hard=False, reboot_type=None,
                           shutdown_timeout=None, force_fallback=False, wait=True, timeout=60)
    result = ensure_state(backend, request, clock=clock, sleep=clock.sleep)
    assert result['changed'] and result['instance']['state'] == states.STOPPED
    assert daemon.received == [('shutdown', UUID)]       # the request was sent once
    assert backend.conn.drops == 1 and daemon.opens == 2
    assert result['instance']['api_requests'] == backend.request_count()
