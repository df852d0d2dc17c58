# -*- coding: utf-8 -*-
"""Evacuating a dead libvirt host (module_utils/libvirt/evacuation.py), driven by the core drain, against an
in-memory target host, backup store and relaunch: which domains, in which power state, the record, reruns,
check mode, refusals before anything changes, and a failed relaunch that leaves nothing behind."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
import time

import pytest

libvirt = pytest.importorskip('libvirt')

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import moves, states  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.backend import Observation  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import (  # noqa: E402
    BackendError, InvalidRequest, VmopsError)
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt import evacuation  # noqa: E402

DEAD = 'qemu+tcp://h1/system'
TARGET = 'qemu+tcp://h2/system'
IMAGES = '/var/lib/libvirt/images'


class Dom(object):
    def __init__(self, name, uuid):
        self._name, self._uuid = name, uuid
        self.state = states.STOPPED
        self.calls = []

    def name(self):
        return self._name

    def UUIDString(self):
        return self._uuid

    def create(self):
        self.calls.append('create')
        self.state = states.RUNNING

    def createWithFlags(self, flags):
        self.calls.append(('createWithFlags', flags))
        self.state = states.PAUSED if flags & libvirt.VIR_DOMAIN_START_PAUSED else states.RUNNING


class Vol(object):
    def __init__(self, host, path):
        self.host, self.path = host, path

    def delete(self, flags):
        self.host.files.discard(self.path)


class Conn(object):
    def __init__(self, host):
        self.host = host

    def defineXML(self, xml):
        name = xml.split('<name>')[1].split('</name>')[0]
        uuid = xml.split('<uuid>')[1].split('</uuid>')[0]
        if self.host.fail_define:
            raise libvirt.libvirtError('define refused')
        dom = self.host.domains[uuid] = Dom(name, uuid)
        return dom

    def getFreeMemory(self):
        return 4096 * 1024 * 1024

    def storageVolLookupByPath(self, path):
        if path not in self.host.files:
            error = libvirt.libvirtError('no vol')
            error.err = (libvirt.VIR_ERR_NO_STORAGE_VOL, 0, 'no vol', 0, None, None, None, 0, 0)
            raise error
        return Vol(self.host, path)


class Target(object):
    """The target host: its domains by UUID, and the files that exist there."""

    uri = TARGET

    def __init__(self):
        self.domains = {}
        self.files = set()
        self.fail_define = False
        self.conn = Conn(self)
        self.closed = False

    def location(self):
        return TARGET

    def request_count(self):
        return 0

    def find(self, identifier):
        return self.domains.get(identifier)

    def observe(self, dom):
        return Observation(dom.name(), dom.UUIDString(), dom.state, None, None, {})

    def close(self):
        self.closed = True


class Store(object):
    """Backups: {domain: {backup: manifest}}."""

    root = '/backups'

    def __init__(self):
        self.backups_ = {}
        self.closed = False

    def add(self, name, backup, created_at, state, host_uri=DEAD, hostname='h1', complete=True):
        uuid = 'uuid-%s' % name
        self.backups_.setdefault(name, {})[backup] = {
            'name': backup, 'domain_name': name, 'domain_uuid': uuid, 'created_at': created_at,
            'complete': complete, 'power_state': state, 'host': {'uri': host_uri, 'hostname': hostname},
            'disks': [{'target': 'vda', 'source': '%s/%s.qcow2' % (IMAGES, name), 'file': 'vda.qcow2'}],
            'recorded': {'flavor': {'memory_mib': 128}}}

    def location(self):
        return {'uri': TARGET, 'host': 'h2', 'root': self.root}

    def domains(self):
        return sorted(self.backups_)

    def backups(self, domain):
        return sorted(self.backups_.get(domain, {}))

    def path(self, domain, backup=None):
        return '%s/%s/%s' % (self.root, domain, backup)

    def manifest(self, domain, backup):
        manifest = self.backups_[domain][backup]
        return manifest, 'complete' if manifest['complete'] else 'incomplete'

    def read_at(self, path, name):
        domain = path.split('/')[2]
        return ('<domain><name>%s</name><uuid>uuid-%s</uuid></domain>' % (domain, domain)).encode()

    def close(self):
        self.closed = True


class Files(object):
    def __init__(self, target):
        self.target = target

    def pool(self, directory):
        return directory

    def listing(self, directory):
        return dict((path.rsplit('/', 1)[1], ('file',)) for path in self.target.files
                    if path.rsplit('/', 1)[0] == directory)


class Snapshots(object):
    @staticmethod
    def record_from_manifest(path, manifest):
        return {'id': path, 'name': manifest['name'], 'path': path, 'manifest': manifest,
                'created_at': manifest['created_at'], 'secrets_removed': []}


class Restorer(object):
    """restore.py's relaunch, in memory: disks written to the target, then the definition defined there."""

    def __init__(self, target, store):
        self.target, self.store = target, store
        self.snapshots = Snapshots()
        self.files = Files(target)
        self.relaunched = []

    def plan_relaunch(self, record, request):
        assert request.power_state == 'stopped'
        copies = [{'target': disk['target'], 'path': disk['source']} for disk in record['manifest']['disks']]
        for copy in copies:
            if copy['path'] in self.target.files:
                raise InvalidRequest('%s already exists' % copy['path'])
        return {'copies': copies, 'domain_xml': self.store.read_at(record['path'], None).decode()}

    def relaunch(self, record, plan, request, deadline):
        for copy in plan['copies']:
            self.target.files.add(copy['path'])
        self.target.conn.defineXML(plan['domain_xml'])
        self.relaunched.append(record['path'])
        return None, {}


def dead(uri, seconds=None):
    return False, 'Failed to connect socket: Connection refused'


def evacuation_of(target, store, shared_storage=False, prober=dead):
    return evacuation.LibvirtEvacuation(target, store, DEAD, 'h1', shared_storage, 600,
                                        restorer=Restorer(target, store), prober=prober)


def request(**kwargs):
    fields = dict(host='h1', mode='evacuate', target_host=TARGET, fenced=True, poll_interval=0.01)
    fields.update(kwargs)
    return moves.MoveRequest(**fields)


def world():
    target, store = Target(), Store()
    store.add('run', 'b1', '2026-01-01T10:00:00Z', states.RUNNING)
    store.add('run', 'b2', '2026-01-02T10:00:00Z', states.RUNNING)
    store.add('run', 'b3', '2026-01-03T10:00:00Z', states.RUNNING, complete=False)     # never used
    store.add('pause', 'b1', '2026-01-02T11:00:00Z', states.PAUSED)
    store.add('stop', 'b1', '2026-01-02T12:00:00Z', states.STOPPED)
    store.add('susp', 'b1', '2026-01-02T13:00:00Z', states.SUSPENDED)
    store.add('elsewhere', 'b1', '2026-01-02T14:00:00Z', states.RUNNING, host_uri='qemu+tcp://h3/system',
              hostname='h3')
    return target, store


def by_name(result):
    return dict((entry['name'], entry) for entry in result['servers'])


def test_every_domain_of_the_dead_host_comes_up_on_the_target_in_its_recorded_state():
    target, store = world()
    result = moves.run(evacuation_of(target, store), request())
    servers = by_name(result)
    assert sorted(servers) == ['pause', 'run', 'stop', 'susp']      # not the one taken on h3
    assert result['changed'] and result['totals']['moved'] == 4
    states_now = dict((dom.name(), dom.state) for dom in target.domains.values())
    assert states_now == {'run': states.RUNNING, 'pause': states.PAUSED, 'stop': states.STOPPED,
                          'susp': states.STOPPED}
    assert servers['run']['data_as_of'] == '2026-01-02T10:00:00Z'       # the newest complete backup
    assert servers['run']['disk'] == 'restored from b2 taken 2026-01-02T10:00:00Z'
    assert servers['run']['from'] == 'h1' and servers['run']['to'] == TARGET
    assert servers['run']['steps'] == ['disks vda written from backup b2', 'defined', 'started']
    assert servers['pause']['state_before'] == states.PAUSED and servers['pause']['state_after'] == states.PAUSED
    assert servers['pause']['steps'][-1] == 'started paused'
    assert 'saved memory stayed on the dead host' in servers['susp']['message']
    assert servers['susp']['state_after'] == states.STOPPED
    assert result['service'] == {'before': None, 'after': None}


def test_a_newer_point_of_an_incremental_chain_is_never_taken_for_a_standalone_backup():
    # an increment's files hold only what changed since its parent: restoring it alone would lose the rest
    target, store = world()
    store.add('run', 'p9', '2026-01-09T10:00:00Z', states.RUNNING)
    store.backups_['run']['p9']['chain_format'] = 1
    store.backups_['run']['p9']['kind'] = 'incremental'
    servers = by_name(moves.run(evacuation_of(target, store), request()))
    assert servers['run']['disk'] == 'restored from b2 taken 2026-01-02T10:00:00Z'


def test_a_rerun_skips_what_is_already_up_and_changes_nothing():
    target, store = world()
    moves.run(evacuation_of(target, store), request())
    calls_before = [list(dom.calls) for dom in target.domains.values()]
    result = moves.run(evacuation_of(target, store), request())
    assert not result['changed'] and result['totals']['skipped'] == 4 and result['totals']['moved'] == 0
    assert all('already defined on' in entry['message'] for entry in result['servers'])
    # The record says where each already is, in the state it is in there.
    assert [entry['to'] for entry in result['servers']] == [TARGET] * 4
    assert dict((e['name'], e['state_after']) for e in result['servers'])['pause'] == states.PAUSED
    assert [list(dom.calls) for dom in target.domains.values()] == calls_before


def test_check_mode_plans_and_touches_nothing():
    target, store = world()
    result = moves.run(evacuation_of(target, store), request(), check_mode=True)
    assert result['changed'] and result['totals']['planned'] == 4
    assert target.domains == {} and target.files == set()
    notes = dict((entry['instance'], entry['note']) for entry in result['plan'])
    assert notes['pause'].endswith('started paused') and 'data as of 2026-01-02T11:00:00Z' in notes['pause']
    assert result['capacity'][0]['needed']['memory_mib'] == 256 and result['capacity'][0]['fits']


def test_instances_narrows_the_set():
    target, store = world()
    result = moves.run(evacuation_of(target, store), request(instances=['stop']))
    assert [entry['name'] for entry in result['servers']] == ['stop'] and list(target.domains) == ['uuid-stop']


def test_a_named_domain_without_a_backup_from_the_dead_host_is_refused():
    target, store = world()
    backend = evacuation_of(target, store)
    with pytest.raises(InvalidRequest, match='elsewhere, typo'):
        backend.check_instances(['run', 'elsewhere', 'typo'], 'h1')
    assert target.domains == {}


def test_a_disk_path_taken_on_the_target_fails_that_domain_alone_and_is_not_overwritten():
    target, store = world()
    target.files.add('%s/stop.qcow2' % IMAGES)
    with pytest.raises(VmopsError) as raised:
        moves.run(evacuation_of(target, store), request())
    servers = by_name(raised.value.details)
    assert servers['stop']['outcome'] == 'failed' and 'not overwritten' in servers['stop']['message']
    assert servers['run']['outcome'] == 'moved' and 'uuid-stop' not in target.domains
    assert '%s/stop.qcow2' % IMAGES in target.files


def test_shared_storage_defines_the_domain_on_its_disks_as_they_are():
    target, store = world()
    target.files.update('%s/%s.qcow2' % (IMAGES, name) for name in ('run', 'pause', 'stop', 'susp'))
    backend = evacuation_of(target, store, shared_storage=True)
    result = moves.run(backend, request())
    assert result['totals']['moved'] == 4 and backend.restorer.relaunched == []
    assert by_name(result)['run']['disk'] == 'shared' and target.domains['uuid-run'].state == states.RUNNING


def test_a_failed_relaunch_removes_the_disks_it_wrote_and_changes_nothing():
    target, store = world()
    target.fail_define = True
    with pytest.raises(VmopsError) as raised:
        moves.run(evacuation_of(target, store), request(instances=['run']))
    entry = raised.value.details['servers'][0]
    assert entry['outcome'] == 'failed' and 'define refused' in entry['message']
    assert 'removed %s/run.qcow2' % IMAGES in entry['steps']
    assert target.files == set() and raised.value.details['changed'] is False


def test_power_state_option_overrides_the_recorded_one():
    target, store = world()
    moves.run(evacuation_of(target, store), request(power_state='stopped'))
    assert set(dom.state for dom in target.domains.values()) == {states.STOPPED}


@pytest.mark.parametrize('params, message', [
    (dict(mode='evacuate', libvirt_uri=DEAD, target_host=TARGET), 'needs fenced=true'),
    (dict(mode='evacuate', libvirt_uri=DEAD, target_host=TARGET, fenced=True, force_down=True), 'OpenStack only'),
    (dict(mode='evacuate', libvirt_uri=DEAD, target_host='h2', fenced=True), 'must be a libvirt URI'),
    (dict(mode='evacuate', libvirt_uri=DEAD, fenced=True), 'must be a libvirt URI'),
    (dict(mode='evacuate', host='h1', target_host=TARGET, fenced=True), 'named by its URI'),
    (dict(mode='evacuate', libvirt_uri=DEAD, target_host=DEAD, fenced=True), 'URI of the dead host'),
    (dict(mode='evacuate', libvirt_uri=DEAD, target_host=TARGET, fenced=True, migration_uri=TARGET),
     'migration_uri does not apply'),
])
def test_bad_options_are_refused_before_connecting(params, message):
    with pytest.raises(InvalidRequest, match=message):
        evacuation.validate_options(params)


def test_options_give_the_dead_uri():
    assert evacuation.validate_options(dict(host=DEAD, target_host=TARGET, fenced=True)) == DEAD


def test_a_host_that_answers_is_refused_before_anything_is_opened():
    params = dict(mode='evacuate', host='h1', libvirt_uri=DEAD, target_host='qemu+tcp://nowhere.invalid/system',
                  fenced=True)
    with pytest.raises(InvalidRequest, match='its libvirtd answers'):
        evacuation.open_backend(params, prober=lambda uri: (True, 'host name h1'))


class _Conn(object):
    def getHostname(self):
        return 'h1'

    def close(self):
        pass


def _refused(uri):
    raise libvirt.libvirtError('Failed to connect socket: Connection refused')


def test_probe_is_bounded_and_says_what_it_saw():
    hang = threading.Event()
    started = time.monotonic()
    assert evacuation.probe(DEAD, 0.2, opener=lambda uri: hang.wait(5) and _Conn()) == (False, 'no answer within 0.2 s')
    assert time.monotonic() - started < 2
    hang.set()
    assert evacuation.probe(DEAD, 1, opener=_refused)[0] is False
    assert evacuation.probe(DEAD, 1, opener=lambda uri: _Conn()) == (True, 'host name h1')


def test_an_evacuation_cannot_be_aborted():
    target, store = world()
    backend = evacuation_of(target, store)
    with pytest.raises(BackendError):
        backend.abort(None)


def test_a_dead_host_that_answers_again_stops_the_run_before_the_next_domain():
    target, store = world()
    probes = []

    def back_after_first_domain(uri, seconds=None):
        probes.append(uri)
        return (len(target.domains) >= 1, 'host name h1')

    backend = evacuation_of(target, store, prober=back_after_first_domain)
    watch_class_every = evacuation.DeadHostWatch.every
    evacuation.DeadHostWatch.every = 0.0
    try:
        with pytest.raises(VmopsError) as raised:
            moves.run(backend, request())
    finally:
        evacuation.DeadHostWatch.every = watch_class_every
    servers = raised.value.details['servers']
    outcomes = sorted(entry['outcome'] for entry in servers)
    assert outcomes == ['moved', 'not_started', 'not_started', 'not_started'] and len(target.domains) == 1
    assert 'h1 answers again' in raised.value.msg and probes
