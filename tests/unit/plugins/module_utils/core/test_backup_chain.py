# -*- coding: utf-8 -*-
"""instance_backup's chain rules on generated chains, each result checked by an independent checker
written here (it walks parents on its own and knows nothing of the rules' code), and BackupRun against
an in-memory BackupSets (the real backends are proven by the integration targets)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import random

import pytest

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import backup_chain as chain_rules
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import (
    BackendError, InstanceNotFound, InvalidRequest)
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.backend import MODEL as LIBVIRT
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.backend import MODEL as OPENSTACK

SEEDS = range(400)


def new_point(name, kind, parent, minute, complete=True):
    return {'name': name, 'series': 'nightly', 'instance': 'web1', 'kind': kind, 'parent': parent,
            'taken_at': '2026-12-04T00:%02d:00.000000Z' % minute, 'complete': complete}


def generated_points(rng):
    """A series as a long-lived backup schedule leaves it: fulls, increments on the newest point,
    failed runs (incomplete points), some points deleted by hand (gaps)."""
    points = []
    for minute in range(rng.randint(0, 30)):
        complete_ones = [p for p in points if p['complete']]
        name = 'p%02d' % minute
        if not complete_ones or rng.random() < 0.25:
            new = new_point(name, 'full', None, minute)
        else:
            parent = complete_ones[-1] if rng.random() < 0.8 else rng.choice(points)
            new = new_point(name, 'incremental', parent['name'], minute)
        new['complete'] = rng.random() > 0.15
        points.append(new)
    for gone in [p for p in points if rng.random() < 0.08]:
        points.remove(gone)
    rng.shuffle(points)
    return points


# The independent checker ------------------------------------------------------------------------------

def ancestors(points, name):
    """Every name a point's restore reaches through parent links (present or not), itself excluded."""
    by_name = {p['name']: p for p in points}
    found, current = [], by_name.get(name, {}).get('parent')
    while current is not None and current not in found:
        found.append(current)
        current = by_name[current].get('parent') if current in by_name else None
    return found


def restorable(points, name):
    by_name = {p['name']: p for p in points}
    names = [name] + ancestors(points, name)
    if any(n not in by_name or not by_name[n]['complete'] for n in names):
        return False
    return by_name[names[-1]]['kind'] == 'full'


def newest_first(points):
    return sorted(points, key=lambda p: (p['taken_at'], p['name']), reverse=True)


@pytest.mark.parametrize('seed', SEEDS)
def test_retention_never_deletes_what_a_kept_point_needs(seed):
    rng = random.Random(seed)
    points = generated_points(rng)
    keep = rng.randint(1, 6)
    delete, kept, why = chain_rules.retention_plan(points, keep)
    deleted_names = {p['name'] for p in delete}
    kept_names = {p['name'] for p in kept}
    assert deleted_names | kept_names == {p['name'] for p in points}
    assert not deleted_names & kept_names
    assert set(why) == deleted_names | kept_names
    # The newest `keep` complete points are kept, and nothing a kept point reaches is deleted.
    wanted = [p['name'] for p in newest_first(points) if p['complete']][:keep]
    assert set(wanted) <= kept_names
    for name in kept_names:
        assert not set(ancestors(points, name)) & deleted_names, (name, ancestors(points, name))
    # A kept point restorable before stays restorable after.
    remaining = [p for p in points if p['name'] not in deleted_names]
    for name in kept_names:
        assert restorable(remaining, name) == restorable(points, name)
    # Every deleted point is needed by no kept point, and none is one of the newest `keep` complete ones
    # or an incomplete point newer than the newest complete one.
    newest = next((p for p in newest_first(points) if p['complete']), None)
    for gone in delete:
        assert gone['name'] not in wanted
        assert all(gone['name'] not in ancestors(points, name) for name in kept_names)
        if not gone['complete'] and newest is not None:
            assert (gone['taken_at'], gone['name']) < (newest['taken_at'], newest['name'])
    # Everything that is neither wanted, nor needed, nor a newer incomplete point goes.
    roots = set(wanted) | {p['name'] for p in points if not p['complete'] and (
        newest is None or (p['taken_at'], p['name']) > (newest['taken_at'], newest['name']))}
    needed = set(roots)
    for name in roots:
        needed.update(ancestors(points, name))
    for p in points:
        assert (p['name'] in deleted_names) == (p['name'] not in needed)


@pytest.mark.parametrize('seed', SEEDS)
def test_chain_to_starts_with_a_full_and_links_each_to_its_parent_or_names_the_missing_link(seed):
    rng = random.Random(seed)
    points = generated_points(rng)
    by_name = {p['name']: p for p in points}
    for name in list(by_name) + ['nosuch']:
        if restorable(points, name):
            chain = chain_rules.chain_to(points, name)
            assert chain[0]['kind'] == 'full' and chain[-1]['name'] == name
            assert all(p['complete'] for p in chain)
            for previous, link in zip(chain, chain[1:]):
                assert link['kind'] == 'incremental' and link['parent'] == previous['name']
            assert len(chain) == 1 + len(ancestors(points, name))
        else:
            with pytest.raises(InvalidRequest) as refused:
                chain_rules.chain_to(points, name)
            missing = refused.value.details['missing']
            assert missing in refused.value.msg
            assert missing == name or missing in ancestors(points, name)
            assert missing not in by_name or not by_name[missing]['complete']


@pytest.mark.parametrize('seed', SEEDS)
def test_choose_kind_builds_only_on_a_restorable_newest_point(seed):
    rng = random.Random(seed)
    points = generated_points(rng)
    full_every = rng.choice([None, 1, 2, 3, 5, 7])
    broken = rng.choice([None, None, 'checkpoint gone'])
    newest = next((p for p in newest_first(points) if p['complete']), None)
    usable = newest is not None and restorable(points, newest['name']) and not broken
    length = 1 + len(ancestors(points, newest['name'])) if usable else 0
    kind, parent, why = chain_rules.choose_kind(points, 'auto', full_every, broken)
    if usable and not (full_every and length >= full_every):
        assert (kind, parent) == ('incremental', newest['name'])
    else:
        assert (kind, parent) == ('full', None)
        assert why.startswith('full: ')
    if usable:
        taken = chain_rules.choose_kind(points, 'incremental', full_every, broken)
        assert taken[:2] == ('incremental', newest['name'])
    else:
        with pytest.raises(InvalidRequest):
            chain_rules.choose_kind(points, 'incremental', full_every, broken)
    assert chain_rules.choose_kind(points, 'full', full_every, broken)[:2] == ('full', None)


def test_choose_kind_says_why():
    points = [new_point('a', 'full', None, 1), new_point('b', 'incremental', 'a', 2)]
    assert chain_rules.choose_kind([], 'auto', 7) == ('full', None, 'full: the series holds no complete point yet')
    assert chain_rules.choose_kind(points, 'auto', 7)[:2] == ('incremental', 'b')
    kind, _parent, why = chain_rules.choose_kind(points, 'auto', 2)
    assert kind == 'full' and 'already holds 2 points (full_every=2)' in why
    kind, _parent, why = chain_rules.choose_kind(points, 'auto', 7, broken='checkpoint b is gone from host h2')
    assert kind == 'full' and 'checkpoint b is gone from host h2' in why
    with pytest.raises(InvalidRequest) as refused:
        chain_rules.choose_kind([new_point('b', 'incremental', 'a', 2)], 'incremental', 7)
    assert 'a, the parent of b, is missing' in refused.value.msg and refused.value.details['missing'] == 'a'


def test_retention_keeps_a_whole_chain_for_its_newest_point():
    points = [new_point('f1', 'full', None, 1), new_point('i1', 'incremental', 'f1', 2),
              new_point('i2', 'incremental', 'i1', 3), new_point('f2', 'full', None, 4), new_point('x', 'full', None, 5, False)]
    delete, kept, why = chain_rules.retention_plan(points, 2)
    assert [p['name'] for p in delete] == []
    assert [p['name'] for p in kept] == ['f1', 'i1', 'i2', 'f2', 'x']
    assert why['i1'] == 'needed by i2' and why['f1'] == 'needed by i1'
    delete, kept, _why = chain_rules.retention_plan(points, 1)
    assert [p['name'] for p in delete] == ['f1', 'i1', 'i2']
    with pytest.raises(InvalidRequest):
        chain_rules.retention_plan(points, 0)


def test_generated_names_differ_within_a_second():
    moment = datetime.datetime(2026, 12, 4, 3, 0, 0, 123456, tzinfo=datetime.timezone.utc)
    assert chain_rules.generated_name('nightly', moment) == 'nightly-20261204T030000.123Z'


# The request -------------------------------------------------------------------------------------------

def req(**overrides):
    fields = dict(instance='web1', state='present', series='nightly', point=None, mode='auto', full_every=7,
                  retention=None, quiesce='auto', restore_as=None, name=None, timeout=60)
    fields.update(overrides)
    return chain_rules.BackupRequest(**fields)


@pytest.mark.parametrize('overrides, words', [
    (dict(instance=None), 'instance is required'),
    (dict(series=None), 'series'),
    (dict(series='bad name'), 'series'),
    (dict(mode='diff'), 'mode must be'),
    (dict(full_every=0), 'full_every'),
    (dict(retention=0), 'retention'),
    (dict(point='p1'), 'only apply to state=restored'),
    (dict(state='restored'), 'needs point'),
    (dict(state='restored', point='p1', retention=3), 'retention and name'),
    (dict(timeout=0), 'timeout'),
    (dict(backup_dir='relative'), 'absolute'),
])
def test_bad_requests_are_refused(overrides, words):
    with pytest.raises(InvalidRequest) as refused:
        chain_rules.validate_backup_request(LIBVIRT, req(**overrides))
    assert words in refused.value.msg


def test_store_options_are_libvirt_only():
    with pytest.raises(InvalidRequest) as refused:
        chain_rules.validate_backup_request(OPENSTACK, req(backup_uri='qemu:///system'))
    assert 'only apply to the libvirt backend' in refused.value.msg
    chain_rules.validate_backup_request(OPENSTACK, req())


# BackupRun against an in-memory backend ---------------------------------------------------------------

class FakeSets(chain_rules.BackupSets):
    model = LIBVIRT

    def __init__(self, points=(), broken=None, fail_on=None, refuse=None):
        self.stored = {p['name']: dict(p) for p in points}
        self.broken = broken
        self.fail_on = fail_on
        self.refuse = refuse
        self.calls = []
        self.minute = 30

    def find_instance(self, identifier):
        return identifier if identifier == 'web1' else None

    def describe(self, instance):
        return {'name': instance, 'id': 'uuid-' + instance, 'state': 'running'}

    def points(self, instance, series):
        return [dict(p) for p in self.stored.values()]

    def broken_reason(self, instance, point):
        return self.broken

    def check_take(self, instance, kind, parent, quiesce):
        if self.refuse:
            raise InvalidRequest(self.refuse)
        return {'disks': [{'device': 'vda'}]}

    def take(self, instance, name, series, kind, parent, quiesce):
        self.calls.append(('take', name, kind, parent and parent['name']))
        if self.fail_on == 'take':
            raise BackendError('the backup job failed')
        self.minute += 1
        new = new_point(name, kind, parent and parent['name'], self.minute)
        self.stored[name] = new
        return dict(new, _private='x')

    def delete(self, point):
        self.calls.append(('delete', point['name']))
        self.stored.pop(point['name'], None)

    def restore(self, chain, target):
        self.calls.append(('restore', [p['name'] for p in chain], target['restore_as']))
        return {'restore_as': target['restore_as']}


def test_a_run_takes_an_increment_verifies_and_then_applies_retention_newest_first():
    sets = FakeSets([new_point('f1', 'full', None, 1), new_point('i1', 'incremental', 'f1', 2), new_point('f2', 'full', None, 3)])
    result = chain_rules.BackupRun(sets, req(retention=2, name='n1')).result()
    assert sets.calls == [('take', 'n1', 'incremental', 'f2'), ('delete', 'i1'), ('delete', 'f1')]
    assert result['changed'] and result['action'] == 'backup'
    assert result['point']['name'] == 'n1' and '_private' not in result['point']
    assert [d['name'] for d in result['deleted']] == ['f1', 'i1']
    assert result['points'] == ['f2', 'n1']
    assert result['diff'] == {'before': {'points': ['f1', 'i1', 'f2']}, 'after': {'points': ['f2', 'n1']}}
    assert [s['step'] for s in result['steps']] == ['take', 'verify', 'delete', 'delete']
    assert all(s['done'] for s in result['steps'])
    assert result['instance']['before']['name'] == 'web1'
    # The same name again: nothing taken, retention already satisfied.
    again = chain_rules.BackupRun(sets, req(retention=2, name='n1')).result()
    assert not again['changed'] and again['action'] == 'none' and len(sets.calls) == 3


def test_check_mode_plans_exactly_and_changes_nothing():
    points = [new_point('f1', 'full', None, 1), new_point('i1', 'incremental', 'f1', 2), new_point('f2', 'full', None, 3)]
    sets = FakeSets(points)
    result = chain_rules.BackupRun(sets, req(retention=1, name='n1'), check_mode=True).result()
    assert sets.calls == [] and len(sets.stored) == 3
    assert result['changed'] and result['point']['status'] == 'planned'
    assert (result['point']['kind'], result['point']['parent']) == ('incremental', 'f2')
    assert [d['name'] for d in result['deleted']] == ['f1', 'i1']
    assert result['points'] == ['f2', 'n1']


def test_refusals_change_nothing():
    sets = FakeSets([new_point('i1', 'incremental', 'gone', 2)])
    with pytest.raises(InvalidRequest) as refused:
        chain_rules.BackupRun(sets, req(mode='incremental')).result()
    assert 'gone, the parent of i1, is missing' in refused.value.msg
    sets = FakeSets(refuse='disk vda is qcow2 compat 0.10')
    with pytest.raises(InvalidRequest):
        chain_rules.BackupRun(sets, req()).result()
    assert sets.calls == []
    with pytest.raises(InstanceNotFound):
        chain_rules.BackupRun(sets, req(instance='web2')).result()


def test_a_failed_take_says_what_was_sent_and_deletes_nothing():
    sets = FakeSets([new_point('f1', 'full', None, 1)], fail_on='take')
    with pytest.raises(BackendError) as failed:
        chain_rules.BackupRun(sets, req(retention=1)).result()
    assert failed.value.details['steps'][0]['step'] == 'take' and not failed.value.details['steps'][0]['done']
    assert failed.value.details['instance']['executed']
    assert list(sets.stored) == ['f1']


def test_a_broken_checkpoint_makes_auto_take_a_full_and_say_why():
    sets = FakeSets([new_point('f1', 'full', None, 1)], broken='checkpoint f1 is not on host h2')
    result = chain_rules.BackupRun(sets, req()).result()
    assert result['point']['kind'] == 'full' and 'checkpoint f1 is not on host h2' in result['why']


def test_restore_walks_the_chain_and_refuses_a_broken_one():
    sets = FakeSets([new_point('f1', 'full', None, 1), new_point('i1', 'incremental', 'f1', 2),
                     new_point('i2', 'incremental', 'i1', 3)])
    result = chain_rules.BackupRun(sets, req(state='restored', point='latest', restore_as='web1-r')).result()
    assert sets.calls == [('restore', ['f1', 'i1', 'i2'], 'web1-r')]
    assert result['chain'] == ['f1', 'i1', 'i2'] and result['changed']
    planned = chain_rules.BackupRun(sets, req(state='restored', point='i1', restore_as='x'), check_mode=True).result()
    assert planned['chain'] == ['f1', 'i1'] and len(sets.calls) == 1
    del sets.stored['i1']
    with pytest.raises(InvalidRequest) as refused:
        chain_rules.BackupRun(sets, req(state='restored', point='i2', restore_as='x')).result()
    assert refused.value.details['missing'] == 'i1'
