# -*- coding: utf-8 -*-
"""The parts of the OpenStack snapshot driver that read what the cloud returned: how an image
becomes a record, its completeness and its owner."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack import snapshot as openstack_snapshot
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.backend import MODEL as OPENSTACK


class _Backend(object):
    model = OPENSTACK
    conn = None


def driver():
    return openstack_snapshot.OpenStackSnapshots(_Backend())


def test_volume_backed_image_record():
    image = {'id': 'img', 'name': 'db1-n1', 'status': 'active', 'size': 0, 'vmops_instance_id': 'srv',
             'vmops_series': 'n', 'vmops_complete': 'true', 'vmops_kind': 'volume_backed',
             'vmops_created_at': '2026-11-21T03:00:00.000001Z',
             'block_device_mapping': json.dumps([
                 {'device_name': '/dev/vda', 'snapshot_id': 's-root', 'volume_size': 2, 'boot_index': 0},
                 {'device_name': '/dev/vdb', 'snapshot_id': 's-data', 'volume_size': 5}]),
             'vmops_recorded': json.dumps({'boot': 'volume', 'flavor': 'm1'})}
    record = driver()._record(image)
    assert record['kind'] == 'volume_backed'
    assert [c['id_or_path'] for c in record['contains']] == ['s-root', 's-data']
    assert record['size_bytes'] == 7 * 1024 ** 3
    assert record['_snapshot_ids'] == ['s-root', 's-data']
    assert record['recorded'] == {'boot': 'volume', 'flavor': 'm1'}
    assert record['created_at'] == '2026-11-21T03:00:00.000001Z'
    assert driver()._complete(image)


def test_image_with_data_volume_snapshots_record():
    image = {'id': 'img', 'name': 'web1-set', 'status': 'active', 'size': 1000, 'vmops_instance_id': 'srv',
             'vmops_complete': 'true', 'vmops_kind': 'image', 'vmops_consistency': 'paused',
             'vmops_guest_paused_seconds': '2.250', 'vmops_quiesced': 'false',
             'vmops_volume_snapshots': json.dumps([{'device': '/dev/vdb', 'volume_id': 'v', 'snapshot_id': 's',
                                                    'size_gb': 1}])}
    record = driver()._record(image)
    assert [c['kind'] for c in record['contains']] == ['image', 'volume_snapshot']
    assert record['size_bytes'] == 1000 + 1024 ** 3
    assert record['guest_paused_seconds'] == 2.25
    assert record['consistency'] == 'paused' and record['quiesced'] is False


def test_completeness_and_ownership():
    ours_unfinished = {'id': 'i', 'status': 'active', 'vmops_instance_id': 'srv', 'vmops_complete': 'false'}
    ours_saving = {'id': 'i', 'status': 'saving', 'vmops_instance_id': 'srv', 'vmops_complete': 'true'}
    novas = {'id': 'i', 'status': 'active', 'instance_uuid': 'srv'}
    d = driver()
    assert not d._complete(ours_unfinished)
    assert not d._complete(ours_saving)
    assert d._complete(novas)
    assert d._belongs(novas, 'srv', 'web1')
    assert not d._belongs(novas, 'other', 'web1')
    gone = {'id': 'i', 'vmops_instance_id': 'srv', 'vmops_instance_name': 'web1'}
    assert d._belongs(gone, None, 'web1') and d._belongs(gone, None, 'srv') and not d._belongs(gone, None, 'db1')
