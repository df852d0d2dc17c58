# -*- coding: utf-8 -*-
"""The rolling plan on libvirt (module_utils/libvirt/rolling.py) over in-memory hosts: what is read, the room
counted, destinations only on maintained or spare hosts (each domain moves once), refusals before connecting."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

libvirt = pytest.importorskip('libvirt')

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InvalidRequest  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.rolling_plan import RollRefused  # noqa: E402
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt import rolling  # noqa: E402

H1, H2, H3 = ('qemu+tcp://h%d/system' % n for n in (1, 2, 3))


class Dom(object):
    def __init__(self, name, state, memory_mb=256, vcpus=1, saved=False):
        self._name, self._state, self._memory, self._vcpus, self._saved = name, state, memory_mb, vcpus, saved

    def name(self):
        return self._name

    def UUIDString(self):  # libvirt's name; pylint: disable=invalid-name
        return 'uuid-' + self._name

    def info(self):
        return [self._state, self._memory * 1024, self._memory * 1024, self._vcpus, 0]

    def hasManagedSaveImage(self, flags):  # libvirt's name; pylint: disable=invalid-name,unused-argument
        return self._saved


class Conn(object):
    def __init__(self, memory_mb, cpus, domains):
        self.memory_mb, self.cpus, self.domains, self.closed = memory_mb, cpus, domains, False

    def getInfo(self):  # libvirt's name; pylint: disable=invalid-name
        return ['x86_64', self.memory_mb, self.cpus, 2000, 1, 1, 1, 1]

    def listAllDomains(self, flags):  # libvirt's name; pylint: disable=invalid-name,unused-argument
        return self.domains

    def close(self):
        self.closed = True


def params(**overrides):
    base = dict(hosts=[H1, H2], maintained=[], spare_hosts=[H3], excluded_hosts=[], max_batch=1,
                max_moves_in_flight=None, suspended_policy='move', shelved_policy='move', rescued_policy='fail',
                error_policy='skip')
    base.update(overrides)
    return base


def cloud(h3_memory=4096):
    return {
        H1: Conn(4096, 2, [Dom('a', libvirt.VIR_DOMAIN_RUNNING), Dom('b', libvirt.VIR_DOMAIN_PAUSED),
                           Dom('c', libvirt.VIR_DOMAIN_SHUTOFF, saved=True)]),
        H2: Conn(4096, 2, [Dom('d', libvirt.VIR_DOMAIN_RUNNING), Dom('e', libvirt.VIR_DOMAIN_SHUTOFF)]),
        H3: Conn(h3_memory, 2, []),
    }


def test_each_domain_moves_once_to_a_maintained_or_spare_host():
    hosts = cloud()
    reader = rolling.LibvirtRollingPlanReader(opener=hosts.__getitem__)
    result = reader.plan(params())
    assert result['hosts_read'] == 3 and all(conn.closed for conn in hosts.values())
    moves = [move for batch in result['batches'] for move in batch['moves']]
    assert sorted(move['instance'] for move in moves) == ['a', 'b', 'c', 'd', 'e']
    done = set()
    for batch in result['batches']:
        for move in batch['moves']:
            assert move['to'] == H3 or move['to'] in done, move
            assert move['from'] in batch['hosts']
        done.update(batch['hosts'])
    for batch in result['batches']:
        drained = sorted((drain['host'], drain['target'], domain) for drain in batch['drains']
                         for domain in drain['instances'])
        assert drained == sorted((move['from'], move['to'], move['id']) for move in batch['moves'])
    states = dict((move['instance'], move['state']) for move in moves)
    assert states['c'] == 'suspended' and states['b'] == 'paused' and states['e'] == 'stopped'


def test_room_counts_every_defined_domain_and_the_host_reserve():
    # Either host needs at least 512 MiB free; a 1000 MiB spare offers 1000 - 512 = 488 MiB: refused.
    reader = rolling.LibvirtRollingPlanReader(opener=cloud(h3_memory=1000).__getitem__)
    with pytest.raises(RollRefused) as refused:
        reader.plan(params())
    assert refused.value.details['missing'], refused.value.details


def test_options_refused_before_connecting():
    for bad, word in ((params(hosts=[]), 'required'), (params(hosts=['h1', H2]), 'not URIs'),
                      (params(maintained=[H3]), 'not in hosts'), (params(spare_hosts=[H1]), 'spare')):
        with pytest.raises(InvalidRequest) as refused:
            rolling.check_options(bad)
        assert word in str(refused.value)


def test_a_password_in_a_uri_is_not_in_the_roll_read_back():
    secret = 'qemu+tcp://root:s3cret@h1/system'
    hosts = cloud()
    hosts[secret] = hosts.pop(H1)
    result = rolling.LibvirtRollingPlanReader(opener=hosts.__getitem__).plan(params(hosts=[secret, H2]))
    assert 's3cret' not in str(result['roll'])
