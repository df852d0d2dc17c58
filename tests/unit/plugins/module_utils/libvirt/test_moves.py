# -*- coding: utf-8 -*-
"""The libvirt side of host_evacuate (module_utils/libvirt_moves.py) against an in-memory libvirt.

The fake keeps two hosts with their domains and volumes; a migration moves a domain from one host's
dict to the other's when it ends.  Migrations block like the real call (in the worker thread) until
the test releases them, or until abortJob() / a pause lets them end, so window, deadline, abort and
force-complete are exercised through the real core (moves.run) with short real-time deadlines.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
import time
import xml.etree.ElementTree as ET

import pytest

libvirt = pytest.importorskip('libvirt')

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import moves, states  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt import migration  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt import moves as libvirt_moves  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt import storage  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import (  # noqa: E402
    BackendError, InvalidRequest, VmopsError)

SRC, DST, MIG = 'qemu+unix:///system?socket=/h3', 'qemu+unix:///system?socket=/h4', 'qemu+tcp://10.0.0.4/system'
IMAGES = '/var/lib/libvirt/images'
SHUTOFF, RUNNING, PAUSED = libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED


def _error(code, text='fake error', domain=0):
    error = libvirt.libvirtError(text)
    error.err = (code, domain, text, 0, None, None, None, 0, 0)
    return error


class World(object):
    """Two hosts: name -> {'domains': {uuid: Dom}, 'vols': {path: Vol}, 'pool_type', 'uuid'}."""

    def __init__(self, shared=False):
        self.lock = threading.RLock()
        self.hosts = {}
        for uri, name in ((SRC, 'h3'), (DST, 'h4')):
            self.hosts[uri] = {'name': name, 'domains': {}, 'vols': {}, 'uuid': 'uuid-' + name,
                               'pool_type': 'netfs' if shared else 'dir', 'hidden': set()}
        self.shared = shared
        self.migrations = []        # (uuid, uri, params, flags)
        self.calls = []
        self.release = threading.Event()
        self.release.set()          # migrations end at once unless a test clears this
        self.migration_seconds = 0.0
        self.epoch = {SRC: 0, DST: 0}       # +1 when that host's libvirtd restarts: its connections die
        self.down = set()                   # hosts whose libvirtd is dead (no new connection either)

    def restart(self, uri):
        """The host's libvirtd restarts: every connection opened to it before is dead (guests keep running)."""
        self.epoch[uri] += 1

    def kill(self, uri):
        """The host's libvirtd dies and stays dead: its connections are dead, new ones are refused."""
        self.epoch[uri] += 1
        self.down.add(uri)

    def host_of(self, dom_uuid):
        for uri, host in self.hosts.items():
            if dom_uuid in host['domains']:
                return uri
        return None

    def add(self, name, state=RUNNING, reason=1, saved=False, persistent=True, uri=SRC, job=None, disk=True):
        dom = Dom(self, name, state, reason, saved, persistent, job)
        self.hosts[uri]['domains'][dom.uuid] = dom
        if disk:
            path = '%s/%s.qcow2' % (IMAGES, name)
            self.hosts[uri]['vols'][path] = Vol(path, b'disk of ' + name.encode())
            if self.shared:
                self.hosts[DST if uri == SRC else SRC]['vols'][path] = self.hosts[uri]['vols'][path]
        return dom


class Vol(object):
    def __init__(self, path, data):
        self.path_, self.data = path, data

    def path(self):
        return self.path_

    def XMLDesc(self, flags):
        return ("<volume><name>x</name><capacity unit='bytes'>%d</capacity><target><format type='qcow2'/>"
                "<compat>0.10</compat></target></volume>" % len(self.data))

    def storagePoolLookupByVolume(self):
        return self.pool

    def download(self, stream, offset, length, flags):
        stream.source = self

    def upload(self, stream, offset, length, flags):
        stream.sink = self

    def delete(self, flags):
        self.world.calls.append(('delete', self.conn_uri, self.path_))
        with self.world.lock:
            self.world.hosts[self.conn_uri]['vols'].pop(self.path_, None)


class Stream(object):
    def __init__(self):
        self.source = self.sink = None
        self.sent = False
        self.buffer = bytearray()

    def recvFlags(self, nbytes, flags):
        if self.sent:
            return b''
        self.sent = True
        return bytes(self.source.data)

    def send(self, data):
        self.buffer.extend(data)
        return len(data)

    def finish(self):
        if self.sink is not None:
            self.sink.data = bytes(self.buffer)

    def abort(self):
        pass


class Pool(object):
    def __init__(self, world, uri, pool_type):
        self.world, self.uri, self.pool_type = world, uri, pool_type

    def XMLDesc(self, flags):
        return "<pool type='%s'><name>default</name></pool>" % self.pool_type

    def createXML(self, xml, flags):
        name = xml.split('<name>')[1].split('</name>')[0]
        path = '%s/%s' % (IMAGES, name)
        vol = Vol(path, b'')
        vol.created_from = xml
        vol.world, vol.conn_uri, vol.pool = self.world, self.uri, self
        with self.world.lock:
            self.world.hosts[self.uri]['vols'][path] = vol
            if self.world.shared:
                other = DST if self.uri == SRC else SRC
                self.world.hosts[other]['vols'][path] = vol
        self.world.calls.append(('create_vol', self.uri, path))
        return vol

    def isActive(self):
        return True

    def refresh(self, flags):
        self.world.calls.append(('refresh', self.uri))
        self.world.hosts[self.uri]['hidden'].clear()


class Dom(object):
    _count = 0

    def __init__(self, world, name, state, reason, saved, persistent, job):
        Dom._count += 1
        self.world, self.name_ = world, name
        self.uuid = '00000000-0000-0000-0000-%012d' % Dom._count
        self.code, self.reason, self.saved, self.persistent = state, reason, saved, persistent
        self.job = job
        self.aborted = threading.Event()
        self.memory_kib = 131072
        # Checkpoint definitions are metadata of the host that holds the domain (a move drops them); the
        # bitmaps are in its disk and move with it.
        self.checkpoints = []       # [(name, parent)], parents first
        self.bitmaps = set()
        self.checkpoint_read_error = None

    # identity (client side in libvirt)
    def name(self):
        return self.name_

    def UUIDString(self):
        return self.uuid

    def _check(self):
        if self.world.host_of(self.uuid) is None:
            raise _error(libvirt.VIR_ERR_NO_DOMAIN, 'no domain')

    def state(self):
        self._check()
        return [self.code, self.reason]

    def hasManagedSaveImage(self, flags):
        return self.saved

    def isActive(self):
        self._check()
        return self.code != SHUTOFF

    def isPersistent(self):
        return self.persistent

    def jobStats(self, flags):
        if flags == libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED:
            return {'time_elapsed': 800, 'downtime': 50, 'memory_processed': 40 * 1024 * 1024}
        if self.job:
            return {'type': libvirt.VIR_DOMAIN_JOB_UNBOUNDED, 'operation': libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT}
        return {'type': libvirt.VIR_DOMAIN_JOB_NONE}

    def XMLDesc(self, flags):
        return ("<domain type='qemu'><name>%s</name><devices><disk type='file' device='disk'><driver name='qemu' "
                "type='qcow2'/><source file='%s/%s.qcow2'/><target dev='vda'/></disk></devices></domain>"
                % (self.name_, IMAGES, self.name_))

    def suspend(self):
        self.world.calls.append(('suspend', self.name_))
        self.code, self.reason = PAUSED, 1

    def resume(self):
        self.world.calls.append(('resume', self.name_))
        self.code, self.reason = RUNNING, 1

    def create(self):
        self.world.calls.append(('create', self.name_, self.world.host_of(self.uuid)))
        self.code, self.reason, self.saved = RUNNING, 1, False

    def createWithFlags(self, flags):
        self.world.calls.append(('create_paused', self.name_))
        assert flags == libvirt.VIR_DOMAIN_START_PAUSED
        self.code, self.reason, self.saved = PAUSED, 1, False

    def shutdown(self):
        self.world.calls.append(('shutdown', self.name_))
        if not getattr(self, 'ignores_acpi', False):
            self.code, self.reason = SHUTOFF, 1

    def managedSave(self, flags):
        self.world.calls.append(('managed_save', self.name_, self.world.host_of(self.uuid)))
        self.code, self.reason, self.saved = SHUTOFF, 1, True

    def abortJob(self):
        self.world.calls.append(('abort', self.name_))
        self.aborted.set()

    def destroy(self):
        self.world.calls.append(('destroy', self.name_, self.world.host_of(self.uuid)))
        with self.world.lock:
            host = self.world.hosts[self.world.host_of(self.uuid)]
            if not self.persistent:
                host['domains'].pop(self.uuid)
            else:
                self.code = SHUTOFF

    def listAllCheckpoints(self, flags):
        assert flags == libvirt.VIR_DOMAIN_CHECKPOINT_LIST_TOPOLOGICAL
        if self.checkpoint_read_error:
            raise _error(libvirt.VIR_ERR_INTERNAL_ERROR, self.checkpoint_read_error)
        return [Checkpoint(self, name, parent) for name, parent in self.checkpoints]

    def checkpointCreateXML(self, xml, flags):
        self.world.calls.append(('redefine', self.name_, self.world.host_of(self.uuid), flags))
        tree = ET.fromstring(xml)
        name = tree.findtext('name')
        parent = tree.findtext('parent/name')
        assert flags & libvirt.VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE
        if flags & libvirt.VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE_VALIDATE:
            if not self.isActive():
                raise _error(libvirt.VIR_ERR_OPERATION_INVALID, 'domain is not running')
            if name not in self.bitmaps:
                raise _error(libvirt.VIR_ERR_CHECKPOINT_INCONSISTENT,
                             "checkpoint inconsistent: missing or broken bitmap '%s' for disk 'vda'" % name)
        self.checkpoints.append((name, parent))

    def migrateSetMaxSpeed(self, bandwidth, flags):
        self.world.calls.append(('max_speed', self.name_, bandwidth))

    def migrateToURI3(self, uri, params, flags):
        world = self.world
        world.migrations.append((self.uuid, uri, dict(params), flags))
        self.aborted.clear()
        if flags & libvirt.VIR_MIGRATE_OFFLINE:
            assert self.code == SHUTOFF
        started = time.monotonic()
        while not world.release.is_set() and not flags & libvirt.VIR_MIGRATE_OFFLINE:
            if self.aborted.is_set():
                raise _error(libvirt.VIR_ERR_OPERATION_ABORTED, 'operation aborted: migration out: canceled by client')
            if self.code == PAUSED and getattr(self, 'paused_completes', False):
                break
            time.sleep(0.005)
        while time.monotonic() - started < world.migration_seconds:
            time.sleep(0.005)
        with world.lock:
            source = world.host_of(self.uuid)
            target = DST if source == SRC else SRC
            world.hosts[source]['domains'].pop(self.uuid)
            world.hosts[target]['domains'][self.uuid] = self
            self.checkpoints = []
        return 0


class Checkpoint(object):
    def __init__(self, dom, name, parent):
        self.dom, self.name, self.parent = dom, name, parent

    def getName(self):
        return self.name

    def getParent(self, flags):
        if self.parent is None:
            raise _error(libvirt.VIR_ERR_NO_DOMAIN_CHECKPOINT, 'checkpoint has no parent')
        return Checkpoint(self.dom, self.parent, None)

    def getXMLDesc(self, flags):
        assert flags == libvirt.VIR_DOMAIN_CHECKPOINT_XML_NO_DOMAIN
        parent = '<parent><name>%s</name></parent>' % self.parent if self.parent else ''
        return ("<domaincheckpoint><name>%s</name>%s<creationTime>1764877044</creationTime><disks>"
                "<disk name='vda' checkpoint='bitmap' bitmap='%s'/></disks></domaincheckpoint>"
                % (self.name, parent, self.name))


class Conn(object):
    def __init__(self, world, uri):
        self.world, self.uri = world, uri
        self.host = world.hosts[uri]
        self.closed = False
        self.epoch = world.epoch[uri]

    def isAlive(self):
        return 1 if self.epoch == self.world.epoch[self.uri] else 0

    def _rpc(self):
        if not self.isAlive():
            raise _error(libvirt.VIR_ERR_INTERNAL_ERROR, 'internal error: client socket is closed', libvirt.VIR_FROM_RPC)

    def close(self):
        self.closed = True

    def getCapabilities(self):
        self._rpc()
        return '<capabilities><host><uuid>%s</uuid></host></capabilities>' % self.host['uuid']

    def getHostname(self):
        self._rpc()
        return 'vmops-' + self.host['name']

    def getLibVersion(self):
        self._rpc()
        return 9000000

    def getFreeMemory(self):
        self._rpc()
        return 4 * 1024 ** 3

    def getAllDomainStats(self, stats, flags):
        self._rpc()
        return [(dom, {'state.state': dom.code, 'state.reason': dom.reason, 'balloon.maximum': dom.memory_kib})
                for dom in list(self.host['domains'].values())]

    def listAllDomains(self, flags):
        self._rpc()
        return list(self.host['domains'].values())

    def lookupByUUIDString(self, text):
        self._rpc()
        with self.world.lock:
            if text in self.host['domains']:
                return self.host['domains'][text]
        raise _error(libvirt.VIR_ERR_NO_DOMAIN, 'no domain')

    def lookupByName(self, name):
        self._rpc()
        with self.world.lock:
            for dom in self.host['domains'].values():
                if dom.name() == name:
                    return dom
        raise _error(libvirt.VIR_ERR_NO_DOMAIN, 'no domain')

    def storageVolLookupByPath(self, path):
        self._rpc()
        vol = self.host['vols'].get(path)
        if vol is None or path in self.host['hidden']:     # not seen by the pool since its last refresh
            raise _error(libvirt.VIR_ERR_NO_STORAGE_VOL, 'no vol')
        vol.world, vol.conn_uri = self.world, self.uri
        vol.pool = Pool(self.world, self.uri, self.host['pool_type'])
        return vol

    def storagePoolLookupByTargetPath(self, path):
        self._rpc()
        return Pool(self.world, self.uri, self.host['pool_type'])

    def newStream(self, flags):
        return Stream()


def open_conn(world, uri):
    if uri in world.down:
        raise _error(libvirt.VIR_ERR_SYSTEM_ERROR, "Failed to connect socket to '/run/%s': Connection refused" % uri,
                     libvirt.VIR_FROM_RPC)
    return Conn(world, uri)


def backend(world, **kwargs):
    return libvirt_moves.LibvirtMoves(SRC, DST, migration_uri=MIG, source_label='h3', target_label='h4',
                                      opener=lambda uri: open_conn(world, uri), **kwargs)


def request(**kwargs):
    kwargs.setdefault('poll_interval', 0.01)
    return moves.MoveRequest(host='h3', target_host='h4', **kwargs)


def drain(world, check_mode=False, backend_kwargs=None, **kwargs):
    with backend(world, **(backend_kwargs or {})) as moves_backend:
        try:
            return moves.run(moves_backend, request(**kwargs), check_mode=check_mode)
        except VmopsError as error:
            return dict(error.details, failed=True, msg=error.msg)


def flags_of(world, name):
    found = [flags for dom_uuid, _uri, _params, flags in world.migrations
             if world.hosts[SRC]['domains'].get(dom_uuid, world.hosts[DST]['domains'].get(dom_uuid)).name() == name]
    return found


def server(result, name):
    return [s for s in result['servers'] if s['name'] == name][0]


LIVE_FLAGS = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
              | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)


# --- options -----------------------------------------------------------------------------------

@pytest.mark.parametrize('params, text', [
    (dict(mode='evacuate', target_host=DST, libvirt_uri=SRC), 'needs fenced=true'),
    (dict(libvirt_uri=SRC), 'target_host is required'),
    (dict(libvirt_uri=SRC, target_host='host4'), 'must be a libvirt URI'),
    (dict(libvirt_uri=SRC, target_host=DST, migration_uri='10.0.0.4'), 'migration_uri must be a libvirt URI'),
    (dict(libvirt_uri=SRC, target_host=DST, migration_bandwidth=0), 'at least 1'),
    (dict(host='h3', target_host=DST), 'set libvirt_uri'),
    (dict(libvirt_uri=SRC, target_host=SRC), 'the host being emptied'),
])
def test_bad_options_are_refused_before_connecting(params, text):
    with pytest.raises(InvalidRequest) as info:
        libvirt_moves.validate_options(params)
    assert text in info.value.msg


def test_host_given_as_uri_is_the_source():
    assert libvirt_moves.validate_options(dict(host=SRC, target_host=DST)) == SRC


def test_same_hypervisor_under_two_uris_is_refused():
    world = World()
    world.hosts[DST]['uuid'] = world.hosts[SRC]['uuid']
    with pytest.raises(InvalidRequest) as info:
        backend(world)
    assert 'same hypervisor' in info.value.msg


def test_host_name_must_match_the_hypervisor(monkeypatch):
    world = World()
    monkeypatch.setattr(libvirt, 'open', lambda uri: Conn(world, uri))
    params = dict(host='vmops-h9', libvirt_uri=SRC, target_host=DST)
    with pytest.raises(InvalidRequest) as info:
        libvirt_moves.open_backend(params)
    assert "calls itself 'vmops-h3'" in info.value.msg
    params['host'] = 'vmops-h3'
    libvirt_moves.open_backend(params).close()


# --- listing and plan --------------------------------------------------------------------------

def test_list_maps_states_and_finds_a_migration_in_flight():
    world = World()
    world.add('run')
    world.add('pau', PAUSED)
    world.add('off', SHUTOFF)
    world.add('sav', SHUTOFF, saved=True)
    world.add('mig', job=True)
    world.add('crash', libvirt.VIR_DOMAIN_CRASHED)
    with backend(world) as lv:
        found = dict((s.name, s) for s in lv.list_on_host('h3'))
    assert dict((n, s.state) for n, s in found.items()) == {
        'run': states.RUNNING, 'pau': states.PAUSED, 'off': states.STOPPED, 'sav': states.SUSPENDED,
        'mig': states.RUNNING, 'crash': states.ERROR}
    assert found['mig'].task == 'migrating' and found['mig'].details['move_in_flight']
    assert all(s.host == 'h3' and s.locked is False for s in found.values())


def test_check_mode_plans_and_touches_nothing():
    world = World()
    world.add('a')
    world.add('p', PAUSED)
    world.add('s', SHUTOFF)
    result = drain(world, check_mode=True)
    assert [(p['instance'], p['move']) for p in result['plan']] == [('a', 'live'), ('p', 'live'), ('s', 'cold')]
    assert all('disks copied' in p['note'] for p in result['plan'])
    assert result['capacity'][0]['fits'] and result['capacity'][0]['needed']['memory_mib'] == 256
    assert world.migrations == [] and len(world.hosts[SRC]['domains']) == 3
    assert not [c for c in world.calls if c[0] == 'create_vol']      # no probe in check mode


def test_evacuate_mode_is_refused_in_the_plan_too():
    world = World()
    world.add('a')
    with backend(world) as lv:
        decision = lv.plan_move(lv.list_on_host('h3')[0], request(mode='evacuate'))
    assert decision.move == moves.FAIL


# --- live moves --------------------------------------------------------------------------------

def test_drain_moves_everything_in_its_power_state_within_the_window():
    world = World()
    world.migration_seconds = 0.05
    for name in ('a', 'b', 'c'):
        world.add(name)
    world.add('p', PAUSED)
    world.add('s', SHUTOFF)
    result = drain(world, window=2)
    assert not result.get('failed'), result.get('msg')
    assert result['totals']['moved'] == 5 and result['totals']['max_in_flight'] == 2
    assert world.hosts[SRC]['domains'] == {}
    after = dict((d.name(), d.code) for d in world.hosts[DST]['domains'].values())
    assert after == {'a': RUNNING, 'b': RUNNING, 'c': RUNNING, 'p': PAUSED, 's': SHUTOFF}
    for name in ('a', 'b', 'c', 'p'):
        assert flags_of(world, name) == [LIVE_FLAGS | libvirt.VIR_MIGRATE_NON_SHARED_DISK]
        assert server(result, name)['state_after'] == server(result, name)['state_before']
    assert flags_of(world, 's') == [libvirt.VIR_MIGRATE_OFFLINE | libvirt.VIR_MIGRATE_PEER2PEER
                                    | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE]
    assert world.hosts[DST]['vols'][IMAGES + '/s.qcow2'].data == b'disk of s'     # copied by stream
    assert all(uri == MIG for _u, uri, _p, _f in world.migrations)
    assert result['totals']['api_requests'] > 0
    # rerun: nothing left on the source, nothing to do
    again = drain(world)
    assert again['changed'] is False and again['servers'] == []


def test_window_one_moves_one_at_a_time():
    world = World()
    world.migration_seconds = 0.03
    for name in ('a', 'b', 'c'):
        world.add(name)
    result = drain(world, window=1)
    assert result['totals']['max_in_flight'] == 1 and result['totals']['moved'] == 3
    spans = sorted((s['started'], s['finished']) for s in result['servers'])
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1))


def test_shared_storage_is_not_copied():
    world = World(shared=True)
    world.add('a')
    result = drain(world)
    assert flags_of(world, 'a') == [LIVE_FLAGS]
    assert 'storage shared' in result['plan'][0]['note']


def test_a_probe_decides_when_the_destination_has_a_file_at_the_same_path():
    world = World()
    world.add('a')
    world.hosts[DST]['vols'][IMAGES + '/a.qcow2'] = Vol(IMAGES + '/a.qcow2', b'stale leftover')
    plan = drain(world, check_mode=True)['plan']
    assert 'a probe decides' in plan[0]['note']
    assert [c for c in world.calls if c[0] != 'refresh'] == []     # check mode: a pool refresh, no probe
    result = drain(world)
    probes = [c for c in world.calls if c[0] == 'create_vol' and storage.PROBE_PREFIX in c[2]]
    assert probes and all(c[1] == SRC for c in probes)
    assert [c for c in world.calls if c[0] == 'delete' and storage.PROBE_PREFIX in c[2]]
    assert flags_of(world, 'a') == [LIVE_FLAGS | libvirt.VIR_MIGRATE_NON_SHARED_DISK]
    assert result['totals']['moved'] == 1


@pytest.mark.parametrize('shared, block_migration, text', [
    (True, 'true', 'copying it onto itself would destroy it'),
    (False, 'false', 'the guest would run on another file'),
])
def test_block_migration_that_would_lose_data_is_refused(shared, block_migration, text):
    world = World(shared=shared)
    world.add('a')
    result = drain(world, block_migration=block_migration)
    assert result['failed'] and text in result['msg']
    assert world.migrations == [] and len(world.hosts[SRC]['domains']) == 1


def test_a_shared_dir_pool_not_refreshed_yet_is_still_found_shared():
    world = World(shared=True)
    world.hosts[SRC]['pool_type'] = world.hosts[DST]['pool_type'] = 'dir'     # NFS mounted as a plain dir pool
    world.add('a')
    world.hosts[DST]['hidden'].add(IMAGES + '/a.qcow2')     # the destination pool has not listed it yet
    result = drain(world)
    assert ('refresh', DST) in world.calls
    assert flags_of(world, 'a') == [LIVE_FLAGS]          # probed shared: never copied onto itself
    assert result['totals']['moved'] == 1


def test_transient_domain_is_not_made_persistent():
    world = World(shared=True)
    world.add('t', persistent=False)
    drain(world)
    assert flags_of(world, 't') == [libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER]


def test_bandwidth_goes_into_the_migration_parameters():
    world = World(shared=True)
    world.add('a')
    drain(world, backend_kwargs=dict(bandwidth=5))
    assert world.migrations[0][2] == {libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 5}


def test_suspended_domain_is_restored_paused_moved_and_saved_again():
    world = World()
    dom = world.add('sav', SHUTOFF, saved=True)
    result = drain(world)
    assert server(result, 'sav')['outcome'] == 'moved'
    assert ('create_paused', 'sav') in world.calls and ('managed_save', 'sav', DST) in world.calls
    assert dom.saved and dom.code == SHUTOFF and world.host_of(dom.uuid) == DST
    assert server(result, 'sav')['state_after'] == states.SUSPENDED


def test_suspended_policy_skip_leaves_it():
    world = World()
    world.add('sav', SHUTOFF, saved=True)
    result = drain(world, suspended_policy='skip')
    assert server(result, 'sav')['outcome'] == 'skipped' and world.migrations == []


def test_error_domain_is_skipped_by_default_and_refused_with_move():
    world = World()
    world.add('crash', libvirt.VIR_DOMAIN_CRASHED)
    assert server(drain(world), 'crash')['outcome'] == 'skipped'
    result = drain(world, error_policy='move')
    assert result['failed'] and 'error' in result['msg'] and world.migrations == []


# --- deadline ------------------------------------------------------------------------------------

def test_deadline_aborts_and_the_domain_stays_running_on_the_source():
    world = World()
    world.release.clear()       # the migration never ends by itself
    dom = world.add('slow')
    result = drain(world, deadline=0.2, cold_fallback=False)
    assert result['failed'] and 'aborted after the 0.2 s deadline' in result['msg']
    assert ('abort', 'slow') in world.calls
    assert world.host_of(dom.uuid) == SRC and dom.code == RUNNING
    assert server(result, 'slow')['deadline_action'] == 'abort'


def test_aborted_running_domain_falls_back_to_a_cold_move():
    world = World()
    world.release.clear()
    dom = world.add('slow')
    result = drain(world, deadline=0.3)
    entry = server(result, 'slow')
    assert entry['outcome'] == 'moved' and entry['move'] == 'cold' and entry['attempts'] == ['live', 'cold']
    assert world.host_of(dom.uuid) == DST and dom.code == RUNNING
    assert ('shutdown', 'slow') in world.calls and ('create', 'slow', DST) in world.calls
    assert 'new boot' in entry['message']


def test_aborted_paused_domain_is_not_moved_cold():
    world = World()
    world.release.clear()
    dom = world.add('slowp', PAUSED)
    result = drain(world, deadline=0.2)
    assert result['failed'] and 'memory away' in result['msg']
    assert world.host_of(dom.uuid) == SRC and dom.code == PAUSED


def test_guest_that_ignores_acpi_is_not_forced_off_in_a_cold_fallback():
    world = World()
    world.release.clear()
    dom = world.add('deaf')
    dom.ignores_acpi = True
    result = drain(world, deadline=0.3, backend_kwargs=dict(shutdown_timeout=0.2))
    assert result['failed'] and 'did not shut down' in result['msg']
    assert world.host_of(dom.uuid) == SRC and dom.code == RUNNING
    assert not [c for c in world.calls if c[0] == 'create']


def test_guest_that_shuts_down_late_in_a_cold_fallback_is_started_again_on_the_source(monkeypatch):
    world = World()
    world.release.clear()
    dom = world.add('late')
    dom.ignores_acpi = True
    original_restart = migration.Migrator.restart_on_source

    def powered_off_late(self, domain, handle):
        # The guest reaches power-off only after the shutdown wait gave up: decided by the event,
        # not by a sleep, so a busy machine cannot reorder it.
        dom.code = SHUTOFF
        return original_restart(self, domain, handle)
    monkeypatch.setattr(migration.Migrator, 'restart_on_source', powered_off_late)
    result = drain(world, deadline=0.3, backend_kwargs=dict(shutdown_timeout=0.2))
    assert result['failed'] and 'started again on the source' in result['msg']
    assert ('shutdown', 'late') in world.calls
    assert world.host_of(dom.uuid) == SRC and dom.code == RUNNING


def test_force_complete_pauses_then_resumes_on_the_destination():
    world = World()
    world.release.clear()
    dom = world.add('slow')
    dom.paused_completes = True
    result = drain(world, deadline=0.2, deadline_action='force_complete', backend_kwargs=dict(bandwidth=1))
    assert server(result, 'slow')['outcome'] == 'moved', result.get('msg')
    assert ('suspend', 'slow') in world.calls and ('resume', 'slow') in world.calls
    assert ('max_speed', 'slow', migration.UNLIMITED_BANDWIDTH) in world.calls
    assert world.host_of(dom.uuid) == DST and dom.code == RUNNING


def test_force_complete_that_never_ends_is_aborted_and_resumed_at_close():
    world = World()
    world.release.clear()
    dom = world.add('stuck')
    result = drain(world, deadline=0.1, deadline_action='force_complete')
    assert result['failed'] and 'did not end the move' in result['msg']
    assert ('abort', 'stuck') in world.calls
    assert world.host_of(dom.uuid) == SRC and dom.code == RUNNING


def test_a_migration_found_in_flight_is_adopted():
    world = World()
    dom = world.add('mig', job=True)

    def finish_later():
        time.sleep(0.1)
        with world.lock:
            world.hosts[SRC]['domains'].pop(dom.uuid)
            world.hosts[DST]['domains'][dom.uuid] = dom
    threading.Thread(target=finish_later).start()
    result = drain(world)
    assert server(result, 'mig')['move'] == 'adopt' and server(result, 'mig')['outcome'] == 'moved'
    assert 'without moving' not in server(result, 'mig')['message']
    assert world.migrations == []


def test_an_adopted_migration_that_ends_on_the_source_is_reported_failed():
    world = World()
    dom = world.add('mig', job=True)

    def fail_later():
        time.sleep(0.1)
        dom.job = None
    threading.Thread(target=fail_later).start()
    result = drain(world)
    assert result['failed'] and 'ended without moving it' in result['msg']
    assert world.host_of(dom.uuid) == SRC


def test_cold_copy_never_overwrites_a_file_a_destination_domain_uses():
    world = World()
    world.add('s', SHUTOFF)
    other = world.add('other', uri=DST, disk=False)
    other.XMLDesc = lambda flags: "<domain><source file='%s/s.qcow2'/></domain>" % IMAGES
    world.hosts[DST]['vols'][IMAGES + '/s.qcow2'] = Vol(IMAGES + '/s.qcow2', b'data of other')
    result = drain(world)
    assert result['failed'] and 'used by its domain other' in result['msg']
    assert world.hosts[DST]['vols'][IMAGES + '/s.qcow2'].data == b'data of other'


def test_request_count_counts_libvirt_calls():
    world = World(shared=True)
    world.add('a')
    with backend(world) as lv:
        before = lv.request_count()
        lv.list_on_host('h3')
        assert lv.request_count() == before + 2       # one getAllDomainStats + one jobStats per active domain


def test_refusal_is_a_backend_error_for_a_missing_domain():
    world = World()
    dom = world.add('gone')
    with backend(world) as lv:
        subject = lv.list_on_host('h3')[0]
        world.hosts[SRC]['domains'].pop(dom.uuid)
        with pytest.raises(BackendError):
            lv.start_move(subject, moves.LIVE, None, request())


# --- a libvirtd restart under a drain ----------------------------------------------------------

def _migrate_then(dom, after):
    """The domain's migration runs as usual, then `after()` (e.g. a libvirtd restart) happens."""
    def migrate(uri, params, flags):
        result = Dom.migrateToURI3(dom, uri, params, flags)
        after()
        return result
    dom.migrateToURI3 = migrate


def _migrate_fails(dom, world, restarted, failure):
    """`restarted`'s libvirtd restarts during the domain's migration, which fails with `failure`; the
    domain stays on the source (libvirtd cancels a migration it finds half done after a restart)."""
    def migrate(uri, params, flags):
        world.migrations.append((dom.uuid, uri, dict(params), flags))
        world.restart(restarted)
        raise failure
    dom.migrateToURI3 = migrate


def test_the_drain_reads_its_moves_across_a_restart_of_both_libvirtds():
    world = World()
    dom = world.add('a')
    _migrate_then(dom, lambda: (world.restart(SRC), world.restart(DST)))
    with backend(world) as lv:
        result = moves.run(lv, request())
        drops = (lv.src.drops, lv.dst.drops)
    assert server(result, 'a')['outcome'] == 'moved', result.get('msg')
    assert world.host_of(dom.uuid) == DST and dom.code == RUNNING
    assert drops == (1, 1)        # each kept connection was reopened once, by the reads after the move


def test_an_adopted_migration_is_followed_across_a_source_restart():
    world = World()
    dom = world.add('mig', job=True)
    polls = {'n': 0}
    original = Dom.jobStats

    def job_stats(flags):
        polls['n'] += 1
        if polls['n'] == 3:
            world.restart(SRC)          # libvirtd restarts while the run follows the migration
        if polls['n'] == 5:
            with world.lock:
                world.hosts[SRC]['domains'].pop(dom.uuid)
                world.hosts[DST]['domains'][dom.uuid] = dom
        return original(dom, flags)
    dom.jobStats = job_stats
    result = drain(world)
    assert server(result, 'mig')['move'] == 'adopt' and server(result, 'mig')['outcome'] == 'moved'
    assert world.host_of(dom.uuid) == DST


def test_a_destination_restart_during_a_live_move_is_reported_with_the_destination_named():
    world = World()
    dom = world.add('a')
    # What the source libvirtd answers when its peer-to-peer connection to the destination drops,
    # over the worker's connection, which stays alive.
    _migrate_fails(dom, world, DST, _error(libvirt.VIR_ERR_INTERNAL_ERROR, 'internal error: client socket is closed',
                                           libvirt.VIR_FROM_RPC))
    result = drain(world, cold_fallback=False)
    entry = server(result, 'a')
    assert result['failed'] and entry['outcome'] == 'failed'
    assert 'the connection to the destination libvirtd (h4) dropped during the move' in entry['message']
    assert 'the domain is still on the source' in entry['message']
    assert entry['to'] == 'h3' and entry['state_after'] == states.RUNNING
    assert world.host_of(dom.uuid) == SRC and dom.code == RUNNING
    assert len(world.migrations) == 1           # never sent twice


def test_a_source_restart_during_a_live_move_is_reported_with_the_source_named():
    world = World()
    dom = world.add('a')
    _migrate_fails(dom, world, SRC, _error(libvirt.VIR_ERR_SYSTEM_ERROR,
                                           'End of file while reading data: Input/output error', libvirt.VIR_FROM_RPC))
    result = drain(world, cold_fallback=False)
    entry = server(result, 'a')
    assert entry['outcome'] == 'failed'
    assert 'the connection to the source libvirtd (h3) dropped during the move' in entry['message']
    assert 'the domain is still on the source' in entry['message']
    assert world.host_of(dom.uuid) == SRC and dom.code == RUNNING
    assert len(world.migrations) == 1


def test_a_rerun_after_a_restart_moves_what_is_left():
    world = World()
    dom = world.add('a')
    _migrate_fails(dom, world, DST, _error(libvirt.VIR_ERR_INTERNAL_ERROR, 'internal error: client socket is closed',
                                           libvirt.VIR_FROM_RPC))
    assert drain(world, cold_fallback=False)['failed']
    del dom.migrateToURI3
    again = drain(world)
    assert server(again, 'a')['outcome'] == 'moved' and world.host_of(dom.uuid) == DST


# --- a host that dies under the drain (and stays dead) --------------------------------------------

P2P_CLOSED = _error(libvirt.VIR_ERR_INTERNAL_ERROR, 'internal error: client socket is closed', libvirt.VIR_FROM_RPC)
DEAD = dict(retry_budget=0)     # a dead host is not waited for: its first failed read marks it unreachable


def _migrate_kills(dom, world, killed, failure=None):
    """`killed`'s libvirtd dies during the domain's migration and stays dead.  The migration fails with
    `failure`, or, without one, completes just before the host dies."""
    def migrate(uri, params, flags):
        world.migrations.append((dom.uuid, uri, dict(params), flags))
        if failure is None:
            with world.lock:
                world.hosts[SRC]['domains'].pop(dom.uuid)
                world.hosts[DST]['domains'][dom.uuid] = dom
        world.kill(killed)
        if failure is not None:
            raise failure
        return 0
    dom.migrateToURI3 = migrate


def test_a_destination_that_dies_mid_move_keeps_the_record_with_both_places():
    world = World()
    dom = world.add('a')
    _migrate_kills(dom, world, DST, P2P_CLOSED)
    result = drain(world, cold_fallback=False, backend_kwargs=DEAD)
    entry = server(result, 'a')
    assert entry['outcome'] == 'failed' and entry['to'] == 'h3' and entry['state_after'] == states.RUNNING
    assert entry['places'] == {'h3': states.RUNNING, 'h4': 'unknown'}
    assert 'the connection to the destination libvirtd (h4) dropped' in entry['message']
    assert 'h4 cannot be reached' in entry['message'] and IMAGES + '/a.qcow2' in entry['message']
    assert result['totals']['in_flight'] == 0 and 'ended_early' not in result
    assert result['changed'] is True        # the disk it created on h4 is still there
    assert IMAGES + '/a.qcow2' in world.hosts[DST]['vols'] and world.host_of(dom.uuid) == SRC


def test_moves_not_sent_because_the_destination_is_dead_are_not_started_and_the_run_fails():
    world = World()
    first = world.add('a')
    world.add('b')
    _migrate_kills(first, world, DST, P2P_CLOSED)
    result = drain(world, window=1, cold_fallback=False, backend_kwargs=DEAD)
    entry = server(result, 'b')
    assert entry['outcome'] == 'not_started' and entry['message'].startswith('not started: h4 cannot be reached')
    assert entry['seconds'] is None and entry['started'] is None and len(world.migrations) == 1
    assert result['failed'] is True and result['totals']['not_started'] == 1
    assert '(1 of them not started)' in result['msg']
    assert server(result, 'a')['places'] == {'h3': states.RUNNING, 'h4': 'unknown'}


def test_a_destination_that_dies_once_the_move_completed_reports_it_moved_state_unknown():
    world = World()
    dom = world.add('a')
    _migrate_kills(dom, world, DST)
    result = drain(world, cold_fallback=False, backend_kwargs=DEAD)
    entry = server(result, 'a')
    assert entry['outcome'] == 'failed' and entry['to'] == 'h4' and entry['state_after'] == 'unknown'
    assert 'libvirt reported the move complete, but h4 cannot be reached' in entry['message']
    assert entry['places'] == {'h3': 'absent', 'h4': 'unknown'}
    assert result['changed'] is True


def _migrate_kills_and_hangs(dom, world, abort_ends_it):
    """The destination's libvirtd dies under the migration and the source holds on to it: the call returns
    only once abortJob is sent (when `abort_ends_it`), once the test releases it, or after 10 s."""
    def migrate(uri, params, flags):
        world.migrations.append((dom.uuid, uri, dict(params), flags))
        dom.aborted.clear()
        world.kill(DST)
        limit = time.monotonic() + 10
        while not world.hung_release.is_set() and time.monotonic() < limit:
            if abort_ends_it and dom.aborted.is_set():
                raise _error(libvirt.VIR_ERR_OPERATION_ABORTED, 'operation aborted: migration out: canceled by client')
            time.sleep(0.005)
        raise P2P_CLOSED
    dom.migrateToURI3 = migrate


@pytest.fixture
def quick_peer_watch(monkeypatch):
    monkeypatch.setattr(libvirt_moves, 'PEER_LOST_ABORT', 0.05)
    monkeypatch.setattr(libvirt_moves, 'PEER_LOST_GIVE_UP', 0.5)


def test_a_source_that_holds_a_move_to_a_dead_destination_is_aborted(quick_peer_watch):
    world = World()
    world.hung_release = threading.Event()
    dom = world.add('a')
    _migrate_kills_and_hangs(dom, world, abort_ends_it=True)
    result = drain(world, cold_fallback=False, backend_kwargs=DEAD)
    entry = server(result, 'a')
    assert ('abort', 'a') in world.calls
    assert entry['outcome'] == 'failed' and entry['to'] == 'h3' and entry['state_after'] == states.RUNNING
    assert 'abortJob (the destination libvirtd went away)' in entry['message']
    assert 'still held' not in entry['message']
    assert entry['places'] == {'h3': states.RUNNING, 'h4': 'unknown'}
    assert world.host_of(dom.uuid) == SRC and result['totals']['in_flight'] == 0


def test_a_source_that_never_lets_go_of_a_move_to_a_dead_destination_is_given_up_on(quick_peer_watch):
    world = World()
    world.hung_release = threading.Event()
    dom = world.add('a')
    _migrate_kills_and_hangs(dom, world, abort_ends_it=False)
    started = time.monotonic()
    try:
        result = drain(world, cold_fallback=False, backend_kwargs=DEAD)
    finally:
        world.hung_release.set()
    assert time.monotonic() - started < 5
    entry = server(result, 'a')
    assert ('abort', 'a') in world.calls
    assert entry['outcome'] == 'failed' and entry['to'] == 'h3' and entry['state_after'] == states.RUNNING
    assert 'the destination libvirtd (h4) went away during the move and the source libvirtd (h3) still held ' \
        'the migration' in entry['message'] and 'despite abortJob' in entry['message']
    assert 'virsh domjobinfo' in entry['message'] and 'h4 cannot be reached' in entry['message']
    assert entry['places'] == {'h3': states.RUNNING, 'h4': 'unknown'}
    assert ('resume', 'a') not in world.calls         # nothing that would wait on the job it holds
    assert result['changed'] is True and result['totals']['in_flight'] == 0
    assert 'h4 cannot be reached' in result['msg']


def test_a_source_that_dies_mid_move_is_read_as_unknown_and_the_copy_it_made_is_removed():
    world = World()
    dom = world.add('a')
    _migrate_kills(dom, world, SRC, _error(libvirt.VIR_ERR_SYSTEM_ERROR, 'End of file while reading data: '
                                           'Input/output error', libvirt.VIR_FROM_RPC))
    result = drain(world, cold_fallback=False, backend_kwargs=DEAD)
    entry = server(result, 'a')
    assert entry['outcome'] == 'failed' and entry['to'] is None and entry['state_after'] == 'unknown'
    assert entry['places'] == {'h3': 'unknown', 'h4': 'absent'}
    assert 'the connection to the source libvirtd (h3) dropped' in entry['message']
    assert IMAGES + '/a.qcow2' not in world.hosts[DST]['vols']      # nothing uses it on h4: deleted
    assert result['changed'] is True                                # the source's side is not known


@pytest.mark.parametrize('failure', [
    "unable to connect to server at '10.0.0.9:16509': No route to host",      # a migration_uri that leads nowhere
    'internal error: Attempt to migrate guest to the same host uuid-h3',      # one that leads back to the source
])
def test_a_drain_that_moved_nothing_is_not_a_change(failure):
    world = World()
    dom = world.add('a')

    def migrate(uri, params, flags):
        world.migrations.append((dom.uuid, uri, dict(params), flags))
        raise _error(libvirt.VIR_ERR_SYSTEM_ERROR if 'route' in failure else libvirt.VIR_ERR_INTERNAL_ERROR, failure)
    dom.migrateToURI3 = migrate
    result = drain(world, cold_fallback=False)
    entry = server(result, 'a')
    assert result['failed'] and result['changed'] is False
    assert entry['outcome'] == 'failed' and entry['places'] == {'h3': states.RUNNING, 'h4': 'absent'}
    assert 'deleted from h4 the disk(s) this run created for the copy' in entry['message']
    assert ('create_vol', DST, IMAGES + '/a.qcow2') in world.calls and IMAGES + '/a.qcow2' not in world.hosts[DST]['vols']


def test_migration_uri_of_the_source_itself_is_refused_before_connecting():
    with pytest.raises(InvalidRequest) as info:
        libvirt_moves.validate_options(dict(libvirt_uri=SRC, target_host=DST, migration_uri=SRC))
    assert 'migration_uri is the URI of the host being emptied' in info.value.msg


def test_a_live_move_that_copies_storage_gets_a_sparse_volume_of_its_own_first():
    world = World()
    world.add('a')
    result = drain(world)
    assert server(result, 'a')['outcome'] == 'moved'
    created = world.hosts[DST]['vols'][IMAGES + '/a.qcow2'].created_from
    assert '<allocation unit="bytes">0</allocation>' in created and '<compat>0.10</compat>' in created
    assert '<format type="qcow2"' in created


def test_an_unfinished_incoming_copy_left_on_a_reachable_destination_is_removed():
    world = World()
    dom = world.add('a')
    incoming = Dom(world, 'a', PAUSED, libvirt.VIR_DOMAIN_PAUSED_MIGRATION, False, False, None)
    incoming.uuid = dom.uuid

    def destroyed():
        world.calls.append(('destroy', 'a', DST))
        world.hosts[DST]['domains'].pop(dom.uuid)
    incoming.destroy = destroyed

    def migrate(uri, params, flags):
        world.migrations.append((dom.uuid, uri, dict(params), flags))
        world.hosts[DST]['domains'][dom.uuid] = incoming     # the destination restarted mid-migration
        raise P2P_CLOSED
    dom.migrateToURI3 = migrate
    result = drain(world, cold_fallback=False)
    entry = server(result, 'a')
    assert ('destroy', 'a', DST) in world.calls and 'removed the unfinished incoming copy from h4' in entry['message']
    assert dom.uuid not in world.hosts[DST]['domains'] and IMAGES + '/a.qcow2' not in world.hosts[DST]['vols']
    assert entry['places'] == {'h3': states.RUNNING, 'h4': 'paused (migrating)'}
    assert result['changed'] is False


def test_named_instances_on_neither_host_are_refused_before_anything_changes(monkeypatch):
    world = World()
    world.add('a')
    world.add('moved', uri=DST)
    monkeypatch.setattr(libvirt, 'open', lambda uri: Conn(world, uri))
    params = dict(libvirt_uri=SRC, target_host=DST, instances=['a', 'moved', 'typo'])
    with pytest.raises(InvalidRequest) as info:
        libvirt_moves.open_backend(params)
    assert 'instances names typo, which is on neither' in info.value.msg
    params['instances'] = ['a', 'moved']
    libvirt_moves.open_backend(params).close()
    assert world.migrations == []


def test_a_password_in_a_uri_is_never_in_labels_or_messages():
    secret_uri = 'qemu+tcp://admin:s3cret@10.0.0.4/system'
    with pytest.raises(InvalidRequest) as info:
        libvirt_moves.validate_options(dict(libvirt_uri=secret_uri, target_host=secret_uri))
    assert 's3cret' not in info.value.msg and 'admin:********@10.0.0.4' in info.value.msg


# --- checkpoints (instance_backup chains) follow the domain ------------------------------------------

def _with_checkpoints(dom, names, bitmaps=None):
    dom.checkpoints = [(name, names[index - 1] if index else None) for index, name in enumerate(names)]
    dom.bitmaps = set(names if bitmaps is None else bitmaps)
    return dom


@pytest.mark.parametrize('state', [RUNNING, PAUSED])
def test_a_live_move_redefines_the_checkpoints_on_the_destination_validated(state):
    world = World()
    dom = _with_checkpoints(world.add('a', state), ['p1', 'p2', 'p3'])
    result = drain(world)
    entry = server(result, 'a')
    assert entry['outcome'] == 'moved' and world.host_of(dom.uuid) == DST
    assert dom.checkpoints == [('p1', None), ('p2', 'p1'), ('p3', 'p2')]
    flags = libvirt.VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE | libvirt.VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE_VALIDATE
    assert [c for c in world.calls if c[0] == 'redefine'] == [('redefine', 'a', DST, flags)] * 3
    assert entry['checkpoints'] == {'carried': ['p1', 'p2', 'p3'], 'lost': [], 'why': None}
    assert 'checkpoints redefined on the destination: p1, p2, p3' in entry['message']


def test_a_checkpoint_whose_bitmap_did_not_arrive_is_not_redefined_nor_are_its_children():
    world = World()
    dom = _with_checkpoints(world.add('a'), ['p1', 'p2', 'p3'], bitmaps=['p1', 'p3'])
    entry = server(drain(world), 'a')
    assert entry['outcome'] == 'moved'
    assert dom.checkpoints == [('p1', None)]
    assert entry['checkpoints']['carried'] == ['p1'] and entry['checkpoints']['lost'] == ['p2', 'p3']
    assert "missing or broken bitmap 'p2'" in entry['checkpoints']['why']
    assert 'the next instance_backup point is a full' in entry['message']


def test_a_stopped_domain_moved_cold_says_its_checkpoints_were_not_carried():
    world = World()
    dom = _with_checkpoints(world.add('s', SHUTOFF), ['p1'])
    entry = server(drain(world), 's')
    assert entry['outcome'] == 'moved' and dom.checkpoints == []
    assert entry['checkpoints']['lost'] == ['p1'] and 'not running on the destination' in entry['checkpoints']['why']
    assert not [c for c in world.calls if c[0] == 'redefine']


def test_a_running_domain_moved_cold_gets_its_checkpoints_back_once_started():
    world = World()
    dom = _with_checkpoints(world.add('a'), ['p1', 'p2'])
    with backend(world) as lv:
        subject = lv.list_on_host('h3')[0]
        handle = lv.start_move(subject, moves.COLD, 'h4', request())
        while not handle.data['job'].ended:
            time.sleep(0.01)
    assert handle.data['job'].error is None
    assert dom.code == RUNNING and world.host_of(dom.uuid) == DST
    assert dom.checkpoints == [('p1', None), ('p2', 'p1')]
    assert handle.data['report'] == {'checkpoints': {'carried': ['p1', 'p2'], 'lost': [], 'why': None}}


def test_a_domain_without_checkpoints_reports_none():
    world = World()
    world.add('a')
    entry = server(drain(world), 'a')
    assert 'checkpoints' not in entry and 'checkpoints' not in (entry.get('message') or '')


def test_checkpoints_that_cannot_be_read_do_not_stop_the_move_and_are_reported():
    world = World()
    dom = world.add('a')
    dom.checkpoint_read_error = 'cannot read'
    entry = server(drain(world), 'a')
    assert entry['outcome'] == 'moved' and world.host_of(dom.uuid) == DST
    assert 'could not be read on the source (cannot read)' in entry['checkpoints']['why']


def test_a_migration_adopted_by_a_rerun_carries_the_checkpoints_too():
    world = World()
    dom = _with_checkpoints(world.add('mig', job=True), ['p1', 'p2'])

    def finish_later():
        time.sleep(0.1)
        with world.lock:
            world.hosts[SRC]['domains'].pop(dom.uuid)
            world.hosts[DST]['domains'][dom.uuid] = dom
            dom.checkpoints = []        # libvirt moves no checkpoint definition
    threading.Thread(target=finish_later).start()
    entry = server(drain(world), 'mig')
    assert entry['move'] == 'adopt' and entry['outcome'] == 'moved'
    assert dom.checkpoints == [('p1', None), ('p2', 'p1')]
    assert entry['checkpoints'] == {'carried': ['p1', 'p2'], 'lost': [], 'why': None}
