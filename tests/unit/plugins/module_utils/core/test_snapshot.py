# -*- coding: utf-8 -*-
"""instance_snapshot's neutral core: validation, naming, retention, and the converge flow
against an in-memory snapshot driver (the real drivers are proven by the integration targets)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime

import pytest

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import snapshot as core
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.backend import Observation
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import (
    BackendError, InstanceNotFound, InvalidRequest)
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.backend import MODEL as LIBVIRT
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.backend import MODEL as OPENSTACK


def req(**overrides):
    fields = dict(instance='web1', state='present', name='s1', series=None, retention=None, include_volumes=False,
                  quiesce='auto', metadata=None, backup_dir=core.DEFAULT_BACKUP_DIR, wait=True, timeout=60)
    fields.update(overrides)
    return core.SnapshotRequest(**fields)


class FakeDriver(object):
    """Snapshots in a dict; records every call so tests can check the order of create and delete."""

    model = OPENSTACK

    def __init__(self, instances=('web1',), snapshots=(), fail_create=False, other_owner=()):
        self.instances = set(instances)
        self.snapshots = dict((s['name'], dict(s)) for s in snapshots)
        self.fail_create = fail_create
        self.other_owner = set(other_owner)
        self.calls = []
        self.clock = 0

    def location(self):
        return 'fake'

    def request_count(self):
        return len(self.calls)

    def find_instance(self, identifier):
        return identifier if identifier in self.instances else None

    def observe(self, ref):
        return Observation(ref, 'id-' + ref, 'running', None, None, {})

    def get(self, ref, identifier, name):
        self.calls.append(('get', name))
        if name in self.other_owner:
            raise InvalidRequest('Snapshot name %s is taken by a snapshot of another server' % name)
        found = self.snapshots.get(name)
        return found if found and found['status'] == 'available' else None

    def incomplete(self, ref, identifier, name):
        found = self.snapshots.get(name)
        return [found] if found and found['status'] != 'available' else []

    def series(self, ref, identifier, series):
        return [s for s in self.snapshots.values() if s['series'] == series and s['status'] == 'available']

    def plan(self, ref, request):
        return {'kind': 'image', 'quiesced': False, 'contains': [{'device': 'vda'}]}

    def create(self, ref, request, name, deadline):
        self.calls.append(('create', name))
        if self.fail_create:
            raise BackendError('the cloud broke')
        self.clock += 1
        record = {'id': 'id-' + name, 'name': name, 'series': request.series, 'status': 'available',
                  'created_at': '2026-01-01T00:00:%02d.000000Z' % (50 + self.clock), '_private': 1}
        self.snapshots[name] = record
        return record, {'guest_paused_seconds': 0.0}

    def delete(self, record, deadline):
        self.calls.append(('delete', record['name']))
        self.snapshots.pop(record['name'], None)


def snap(name, series='nightly', second=0, status='available'):
    return {'id': 'id-' + name, 'name': name, 'series': series, 'status': status,
            'created_at': '2026-01-01T00:00:%02d.000000Z' % second}


def test_a_valid_request_passes():
    core.validate_snapshot_request(OPENSTACK, req())
    core.validate_snapshot_request(LIBVIRT, req(name=None, series='nightly', retention=3))
    core.validate_snapshot_request(OPENSTACK, req(state='absent'))


@pytest.mark.parametrize('model,request_,message', [
    (OPENSTACK, req(series='s', retention=0), 'retention must be at least 1'),
    (OPENSTACK, req(retention=2), 'set series too'),
    (OPENSTACK, req(name=None), 'Give the snapshot a name, or a series'),
    (OPENSTACK, req(name='a/b'), "name 'a/b'"),
    (OPENSTACK, req(series='bad series'), "series 'bad series'"),
    (OPENSTACK, req(state='absent', name=None, series='s'), 'give its name'),
    (OPENSTACK, req(state='absent', series='s', retention=1), 'not with absent'),
    (OPENSTACK, req(metadata={'vmops_series': 'x'}), "are the module's own"),
    (OPENSTACK, req(metadata={'k': {'nested': 1}}), 'must be strings'),
    (LIBVIRT, req(backup_dir='relative'), 'backup_dir must be an absolute path'),
    (OPENSTACK, req(timeout=0), 'timeout must be'),
    (OPENSTACK, req(instance=''), 'instance is required'),
])
def test_bad_requests(model, request_, message):
    with pytest.raises(InvalidRequest) as caught:
        core.validate_snapshot_request(model, request_)
    assert message in caught.value.msg


def test_generated_name():
    moment = datetime.datetime(2026, 11, 21, 3, 4, 5, tzinfo=datetime.timezone.utc)
    assert core.generated_name('web1-nightly', moment) == 'web1-nightly-20261121T030405Z'
    assert core.NAME_RE.match(core.generated_name('web1-nightly', moment))


@pytest.mark.parametrize('count,keep,expected', [
    (1, 1, []), (3, 1, ['a0', 'a1']), (3, 2, ['a0']), (3, 3, []), (3, 5, []),
])
def test_to_delete_keeps_the_newest_and_the_new_one(count, keep, expected):
    records = [snap('a%d' % i, second=i) for i in range(count)]
    new = records[-1]
    assert [r['name'] for r in core.to_delete(records, keep, new)] == expected


def test_the_new_snapshot_is_kept_even_if_its_clock_is_behind():
    records = [snap('old1', second=10), snap('old2', second=20)]
    new = snap('new', second=5)
    assert [r['name'] for r in core.to_delete(records + [new], 1, new)] == ['old1', 'old2']
    assert [r['name'] for r in core.to_delete(records + [new], 2, new)] == ['old1']


def test_check_mode_changes_nothing_and_says_what_retention_would_delete():
    driver = FakeDriver(snapshots=[snap('n1', second=1), snap('n2', second=2)])
    result = core.ensure_snapshot(driver, req(name='n3', series='nightly', retention=2), check_mode=True)
    assert result['changed'] and result['action'] == 'create'
    assert result['snapshot']['status'] == 'planned' and result['snapshot']['id'] is None
    assert [d['name'] for d in result['deleted']] == ['n1']
    assert sorted(driver.snapshots) == ['n1', 'n2']
    assert not [c for c in driver.calls if c[0] in ('create', 'delete')]


def test_create_then_retention_deletes_only_after_the_new_one_exists():
    driver = FakeDriver(snapshots=[snap('n1', second=1), snap('n2', second=2), snap('other', series='x')])
    result = core.ensure_snapshot(driver, req(name='n3', series='nightly', retention=2))
    assert result['changed'] and result['snapshot']['name'] == 'n3'
    assert '_private' not in result['snapshot']
    assert [d['name'] for d in result['deleted']] == ['n1']
    acts = [c for c in driver.calls if c[0] in ('create', 'delete')]
    assert acts == [('create', 'n3'), ('delete', 'n1')]
    assert sorted(driver.snapshots) == ['n2', 'n3', 'other']
    assert result['diff']['after'] == {'snapshot': 'n3', 'deleted': ['n1']}


def test_a_failed_create_deletes_nothing():
    driver = FakeDriver(snapshots=[snap('n1', second=1), snap('n2', second=2)], fail_create=True)
    with pytest.raises(BackendError):
        core.ensure_snapshot(driver, req(name='n3', series='nightly', retention=1))
    assert sorted(driver.snapshots) == ['n1', 'n2']
    assert not [c for c in driver.calls if c[0] == 'delete']


def test_repeat_is_unchanged():
    driver = FakeDriver(snapshots=[snap('s1', series=None)])
    result = core.ensure_snapshot(driver, req())
    assert not result['changed'] and result['action'] == 'none'
    assert result['snapshot']['id'] == 'id-s1'
    assert not [c for c in driver.calls if c[0] in ('create', 'delete')]


def test_a_repeat_with_smaller_retention_deletes_without_a_new_snapshot():
    driver = FakeDriver(snapshots=[snap('n1', second=1), snap('n2', second=2)])
    result = core.ensure_snapshot(driver, req(name='n2', series='nightly', retention=1))
    assert result['changed'] and result['action'] == 'none'
    assert [d['name'] for d in result['deleted']] == ['n1']
    assert sorted(driver.snapshots) == ['n2']


def test_an_unfinished_leftover_is_replaced():
    driver = FakeDriver(snapshots=[snap('s1', status='incomplete')])
    result = core.ensure_snapshot(driver, req())
    assert result['changed']
    acts = [c for c in driver.calls if c[0] in ('create', 'delete')]
    assert acts == [('delete', 's1'), ('create', 's1')]


def test_a_name_in_another_series_is_refused():
    driver = FakeDriver(snapshots=[snap('s1', series='weekly')])
    with pytest.raises(InvalidRequest) as caught:
        core.ensure_snapshot(driver, req(series='nightly'))
    assert 'already exists in series weekly' in caught.value.msg


def test_a_name_of_another_instance_is_refused():
    driver = FakeDriver(other_owner=['s1'])
    with pytest.raises(InvalidRequest):
        core.ensure_snapshot(driver, req())
    assert not [c for c in driver.calls if c[0] in ('create', 'delete')]


def test_unknown_instance():
    with pytest.raises(InstanceNotFound):
        core.ensure_snapshot(FakeDriver(instances=()), req())


def test_absent():
    driver = FakeDriver(snapshots=[snap('s1')])
    check = core.ensure_snapshot(driver, req(state='absent'), check_mode=True)
    assert check['changed'] and 's1' in driver.snapshots
    done = core.ensure_snapshot(driver, req(state='absent'))
    assert done['changed'] and done['action'] == 'delete' and done['snapshot'] is None
    assert 's1' not in driver.snapshots
    again = core.ensure_snapshot(driver, req(state='absent'))
    assert not again['changed'] and again['deleted'] == []


def test_absent_of_an_instance_that_is_gone_still_finds_its_snapshot():
    driver = FakeDriver(instances=(), snapshots=[snap('s1')])
    result = core.ensure_snapshot(driver, req(state='absent'))
    assert result['changed'] and result['instance']['state'] == 'absent'


def test_newest_in_series():
    driver = FakeDriver(snapshots=[snap('n1', second=1), snap('n3', second=3), snap('n2', second=2),
                                   snap('x', series='other', second=9)])
    assert core.newest_in_series(driver, 'web1', 'web1', 'nightly')['name'] == 'n3'
    assert core.newest_in_series(driver, 'web1', 'web1', 'none') is None
