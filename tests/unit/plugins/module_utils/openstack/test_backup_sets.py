# -*- coding: utf-8 -*-
"""CinderBackupSets against a fake Nova + Cinder + Glance: what a point is made of, the order of the calls
(pause, system-disk image, backups, waits, record last, unpause), the refusals made before anything is
sent, retention's deletes (images included) and the relaunch from restored volumes (and from a point's
image); and one full + increment + restore through BackupRun."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import itertools

import pytest

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import backup_chain
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import (
    InvalidRequest, RequestFailed, ResourceNotFound, VmopsError)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import Deadline
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack import backup_sets
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.backend import (
    MODEL as OPENSTACK, Resource, observation_from_server)

SERVER = '11111111-1111-4111-8111-111111111111'
OTHER = '22222222-2222-4222-8222-222222222222'


class _Response(object):
    def __init__(self, body):
        self.body = body
        self.content = b'{}'

    def json(self):
        return self.body


class FakeCloud(object):
    """Nova servers with volume attachments, Cinder volumes, backups and pools; `sent` logs every action."""

    def __init__(self):
        self.ids = itertools.count(1)
        self.clock = itertools.count(1)
        self.servers, self.attachments, self.volumes, self.backups, self.images = {}, {}, {}, {}, {}
        self.pools = [{'name': 'vmops@ceph#ceph', 'capabilities': {'storage_protocol': 'ceph'}}]
        self.sent = []
        self.backup_status = 'available'     # what a new backup becomes
        self.image_status = 'active'         # what a new snapshot image becomes
        self.fail_reason = None

    def add_server(self, server_id, name, volumes, status='ACTIVE', image=None):
        if image:
            self.images.setdefault(image['id'], {'id': image['id'], 'name': 'base', 'status': 'active', 'size': 1})
        self.servers[server_id] = {'id': server_id, 'name': name, 'status': status, 'image': image or '',
                                   'flavor': {'original_name': 'vmops.tiny'}, 'addresses': {'private': []},
                                   'metadata': {'role': 'db'}, 'key_name': None,
                                   'OS-EXT-AZ:availability_zone': 'real'}
        self.attachments[server_id] = []
        for device, volume_id, host in volumes:
            self.volumes[volume_id] = {'id': volume_id, 'status': 'in-use', 'size': 1,
                                       'os-vol-host-attr:host': host}
            self.attachments[server_id].append({'device': device, 'volumeId': volume_id})

    def call(self, service, method, path, microversion=None, params=None, json=None, headers=None, verify=None):
        parts = path.strip('/').split('/')
        if method != 'GET':
            self.sent.append((method, path, json))
        if service == 'compute':
            return _Response(self._nova(method, parts, json))
        if service == 'image':
            return _Response(self._glance(method, parts, params or {}, json))
        assert service == 'block_storage' and microversion == backup_sets.BLOCK_STORAGE_MICROVERSION
        return _Response(self._cinder(method, parts, params or {}, json))

    def _nova(self, method, parts, body):
        if parts[0] == 'servers' and parts[1] == 'detail':
            return {'servers': list(self.servers.values())}
        server = self.servers.get(parts[1])
        if server is None:
            raise ResourceNotFound('no server %s' % parts[1])
        if len(parts) == 3 and parts[2] == 'os-volume_attachments':
            return {'volumeAttachments': self.attachments[parts[1]]}
        if len(parts) == 3 and parts[2] == 'action' and 'createImage' in body:
            image_id = 'image-%02d' % next(self.ids)
            # Nova copies the server's image properties, then the request's, and names the server.
            inherited = dict((k, v) for k, v in self.images.get((server['image'] or {}).get('id'), {}).items()
                             if k.startswith('vmops_'))
            self.images[image_id] = dict(inherited, id=image_id, name=body['createImage']['name'],
                                         status=self.image_status, size=4096, virtual_size=2 ** 30,
                                         instance_uuid=server['id'], image_type='snapshot',
                                         created_at='2026-12-04T03:00:%02d' % next(self.clock),
                                         **body['createImage']['metadata'])
            return {'image_id': image_id}
        return {'server': server}

    def _glance(self, method, parts, params, body):
        if parts == ['images']:
            return {'images': [dict(image) for image in self.images.values()
                               if all(image.get(key) == value for key, value in params.items() if key != 'limit')]}
        image = self.images.get(parts[1])
        if image is None:
            raise ResourceNotFound('no image')
        if method == 'DELETE':
            del self.images[parts[1]]
            return {}
        if method == 'PATCH':
            for operation in body:
                assert operation['op'] == 'remove'
                del image[operation['path'].lstrip('/')]
        return dict(image)

    def _cinder(self, method, parts, params, body):
        if parts[0] == 'scheduler-stats':
            return {'pools': self.pools}
        if parts[0] == 'volumes':
            if parts[1] not in self.volumes:
                raise ResourceNotFound('no volume')
            return {'volume': self.volumes[parts[1]]}
        if parts == ['backups'] and method == 'POST':
            return {'backup': self._create_backup(body['backup'])}
        if parts == ['backups', 'detail']:
            found = [b for b in self.backups.values()
                     if not params.get('volume_id') or b['volume_id'] == params['volume_id']]
            return {'backups': sorted(found, key=lambda b: b['id'])}
        backup = self.backups.get(parts[1])
        if backup is None:
            raise ResourceNotFound('no backup')
        if len(parts) == 3 and parts[2] == 'restore':
            volume_id = 'restored-%d' % next(self.ids)
            self.volumes[volume_id] = {'id': volume_id, 'status': 'available', 'size': backup['size'],
                                       'name': body['restore']['name']}
            return {'restore': {'backup_id': backup['id'], 'volume_id': volume_id}}
        if method == 'PUT':
            backup['metadata'] = dict(body['backup']['metadata'])
            return {'backup': backup}
        if method == 'DELETE':
            if any(b.get('_parent') == backup['id'] for b in self.backups.values()):
                raise RequestFailed('Incremental backups exist for this backup.', http_status=400)
            del self.backups[backup['id']]
            return {}
        return {'backup': dict(backup)}

    def _create_backup(self, request):
        volume_id = request['volume_id']
        previous = sorted((b for b in self.backups.values() if b['volume_id'] == volume_id),
                          key=lambda b: b['data_timestamp'])
        if request.get('incremental') and not previous:
            raise RequestFailed('No backups available to do an incremental backup.', http_status=400)
        backup_id = 'backup-%02d' % next(self.ids)
        self.backups[backup_id] = {
            'id': backup_id, 'volume_id': volume_id, 'name': request['name'], 'status': self.backup_status,
            'fail_reason': self.fail_reason, 'size': self.volumes[volume_id]['size'],
            'is_incremental': bool(request.get('incremental')), 'metadata': dict(request.get('metadata') or {}),
            'data_timestamp': '2026-12-04T03:00:%02d' % next(self.clock),
            '_parent': previous[-1]['id'] if request.get('incremental') else None}
        return {'id': backup_id}


class FakeBackend(object):
    model = OPENSTACK
    conn = None

    def __init__(self, cloud):
        self.cloud = cloud
        self.requests = cloud
        self.created = []

    def location(self):
        return 'fake cloud'

    def request_count(self):
        return len(self.cloud.sent)

    def nova(self, method, path, microversion=None, **kwargs):
        return self.cloud.call('compute', method, path, **kwargs)

    def find(self, identifier):
        for server in self.cloud.servers.values():
            if identifier in (server['id'], server['name']):
                return server['id']
        return None

    def observe(self, ref):
        return observation_from_server(self.cloud.servers[ref])

    def perform(self, ref, verb, options=None):
        self.cloud.sent.append(('ACTION', verb, ref))
        self.cloud.servers[ref]['status'] = {'pause': 'PAUSED', 'unpause': 'ACTIVE'}[verb]

    def resolve(self, kind, identifier):
        if kind == 'volume':
            return Resource(self.cloud.volumes[identifier])
        if kind == 'image':
            return Resource(self.cloud.images[identifier])
        return Resource({'id': '%s-id' % identifier, 'name': identifier})

    def find_flavor(self, identifier):
        return {'id': identifier, 'name': identifier}

    def create_server(self, body):
        server_id = '33333333-3333-4333-8333-%012d' % next(self.cloud.ids)
        self.created.append(body)
        self.cloud.servers[server_id] = {'id': server_id, 'name': body['name'], 'status': 'ACTIVE',
                                         'metadata': body.get('metadata') or {}}
        return server_id


def sets_for(cloud):
    sets = backup_sets.CinderBackupSets(FakeBackend(cloud))
    sets.deadline = Deadline(30)
    return sets


def two_volume_cloud():
    cloud = FakeCloud()
    cloud.add_server(SERVER, 'db1', [('/dev/vda', 'vol-root', 'vmops@ceph#ceph'),
                                     ('/dev/vdb', 'vol-data', 'vmops@ceph#ceph')])
    return cloud


def image_booted_cloud(data_volumes=(('/dev/vdb', 'vol-data'),)):
    cloud = FakeCloud()
    cloud.add_server(SERVER, 'app1', [(device, volume_id, 'vmops@ceph#ceph') for device, volume_id in data_volumes],
                     image={'id': 'image-base'})
    cloud.servers[SERVER]['OS-EXT-SRV-ATTR:root_device_name'] = '/dev/vda'
    return cloud


def actions(cloud):
    return [(entry[0], entry[1]) for entry in cloud.sent]


def test_full_point_of_two_volumes_pauses_backs_up_then_writes_the_record_last():
    cloud = two_volume_cloud()
    sets = sets_for(cloud)
    point = sets.take(SERVER, 'n-1', 'n', 'full', None, 'auto')
    assert actions(cloud) == [('ACTION', 'pause'), ('POST', '/backups'), ('POST', '/backups'),
                              ('ACTION', 'unpause'), ('PUT', '/backups/backup-01')]
    posted = [entry[2]['backup'] for entry in cloud.sent if entry[0] == 'POST']
    assert [b['volume_id'] for b in posted] == ['vol-root', 'vol-data']
    assert all(b['force'] and not b['incremental'] and 'snapshot_id' not in b for b in posted)
    assert posted[0]['metadata']['vmops_complete'] == 'false'
    assert 'vmops_server_0' in posted[0]['metadata'] and 'vmops_server_0' not in posted[1]['metadata']
    assert point['complete'] and point['kind'] == 'full' and point['parent'] is None
    assert point['quiesced'] == 'paused'
    assert point['backups'] == {'vol-root': 'backup-01', 'vol-data': 'backup-02'}
    assert [d['device'] for d in point['disks']] == ['/dev/vda', '/dev/vdb']
    assert point['_server']['flavor'] == 'vmops.tiny' and point['_server']['metadata'] == {'role': 'db'}
    assert cloud.servers[SERVER]['status'] == 'ACTIVE'


def test_one_volume_increment_is_not_paused_and_chains_on_the_parent():
    cloud = FakeCloud()
    cloud.add_server(SERVER, 'web1', [('/dev/vda', 'vol-root', 'vmops@ceph#ceph')])
    sets = sets_for(cloud)
    full = sets.take(SERVER, 'n-1', 'n', 'full', None, 'auto')
    assert sets.broken_reason(SERVER, full) is None
    increment = sets.take(SERVER, 'n-2', 'n', 'incremental', full, 'auto')
    assert not [entry for entry in cloud.sent if entry[0] == 'ACTION']
    assert increment['kind'] == 'incremental' and increment['parent'] == 'n-1'
    assert increment['quiesced'] == 'crash-consistent' and increment['complete']
    assert cloud.backups[increment['backups']['vol-root']]['is_incremental']
    names = sorted(p['name'] for p in sets.points(SERVER, 'n'))
    assert names == ['n-1', 'n-2']
    assert sets.points(SERVER, 'other') == [] and sets.points(OTHER, 'n') == []


def test_a_failed_backup_fails_fast_removes_what_was_made_and_unpauses():
    cloud = two_volume_cloud()
    cloud.backup_status, cloud.fail_reason = 'error', 'rbd export-diff failed'
    sets = sets_for(cloud)
    with pytest.raises(VmopsError) as caught:
        sets.take(SERVER, 'n-1', 'n', 'full', None, 'auto')
    assert 'rbd export-diff failed' in caught.value.msg
    assert cloud.backups == {}
    assert cloud.servers[SERVER]['status'] == 'ACTIVE'
    assert ('ACTION', 'unpause') in actions(cloud)


@pytest.mark.parametrize('change, message', [
    ('quiesce', 'quiesce=required'),
    ('lvm', 'cannot back up incrementally'),
    ('error', 'is error'),
])
def test_refused_before_anything_is_sent(change, message):
    cloud = two_volume_cloud()
    quiesce = 'auto'
    if change == 'quiesce':
        quiesce = 'required'
    elif change == 'lvm':
        cloud.volumes['vol-data']['os-vol-host-attr:host'] = 'vmops@lvm#lvm'
        cloud.pools.append({'name': 'vmops@lvm#lvm', 'capabilities': {'storage_protocol': 'iSCSI'}})
    else:
        cloud.volumes['vol-data']['status'] = 'error'
    with pytest.raises(InvalidRequest) as caught:
        sets_for(cloud).take(SERVER, 'n-1', 'n', 'full', None, quiesce)
    assert message in caught.value.msg
    assert cloud.sent == []


def test_broken_reason_names_a_newer_backup_of_the_volume_and_changed_volumes():
    cloud = two_volume_cloud()
    sets = sets_for(cloud)
    full = sets.take(SERVER, 'n-1', 'n', 'full', None, 'auto')
    sets.take(SERVER, 'w-1', 'weekly', 'full', None, 'auto')
    reason = sets.broken_reason(SERVER, full)
    assert 'newest backup' in reason and 'not part of n-1' in reason
    cloud.attachments[SERVER].append({'device': '/dev/vdc', 'volumeId': 'vol-new'})
    assert 'volumes of the server changed' in sets.broken_reason(SERVER, full)


def test_a_point_missing_a_backup_or_its_record_is_incomplete():
    cloud = two_volume_cloud()
    sets = sets_for(cloud)
    point = sets.take(SERVER, 'n-1', 'n', 'full', None, 'auto')
    del cloud.backups[point['backups']['vol-data']]
    assert not sets.points(SERVER, 'n')[0]['complete']
    cloud = two_volume_cloud()
    sets = sets_for(cloud)
    point = sets.take(SERVER, 'n-1', 'n', 'full', None, 'auto')
    cloud.backups[point['backups']['vol-root']]['metadata']['vmops_complete'] = 'false'
    assert not sets.points(SERVER, 'n')[0]['complete']


def test_delete_makes_the_point_incomplete_first_then_removes_its_backups():
    cloud = two_volume_cloud()
    sets = sets_for(cloud)
    point = sets.take(SERVER, 'n-1', 'n', 'full', None, 'auto')
    del cloud.sent[:]
    sets.delete(sets.points(SERVER, 'n')[0])
    assert actions(cloud)[0] == ('PUT', '/backups/backup-01')
    assert sorted(entry[1] for entry in cloud.sent[1:]) == ['/backups/%s' % b for b in sorted(point['backups'].values())]
    assert cloud.backups == {} and sets.points(SERVER, 'n') == []


def test_server_record_longer_than_a_metadata_value_round_trips():
    record = {'metadata': dict(('key%03d' % i, 'x' * 40) for i in range(30)), 'flavor': 'f'}
    chunks = backup_sets._chunks(backup_sets.json.dumps(record))
    assert len(chunks) > 1 and all(len(value) <= 255 for value in chunks.values())
    assert backup_sets._server_record(chunks) == record


@pytest.mark.parametrize('target, message', [
    ({'instance': SERVER, 'restore_as': None}, 'restored as a new server'),
    ({'instance': OTHER, 'restore_as': 'copy'}, 'not of'),
    ({'instance': SERVER, 'restore_as': 'db1'}, 'already exists'),
])
def test_restore_refusals(target, message):
    cloud = two_volume_cloud()
    sets = sets_for(cloud)
    point = sets.take(SERVER, 'n-1', 'n', 'full', None, 'auto')
    del cloud.sent[:]
    with pytest.raises(InvalidRequest) as caught:
        sets.check_restore([point], target)
    assert message in caught.value.msg
    assert cloud.sent == []


def test_restore_makes_volumes_from_the_backups_then_a_server_from_them_once():
    cloud = two_volume_cloud()
    sets = sets_for(cloud)
    full = sets.take(SERVER, 'n-1', 'n', 'full', None, 'auto')
    increment = sets.take(SERVER, 'n-2', 'n', 'incremental', full, 'auto')
    chain = backup_chain.chain_to(sets.points(SERVER, 'n'), 'n-2')
    made = sets.restore(chain, {'instance': SERVER, 'restore_as': 'db1-copy'})
    from_backups = [v['from_backup'] for v in made['volumes']]
    assert from_backups == [increment['backups']['vol-root'], increment['backups']['vol-data']]
    body = sets.backend.created[0]
    assert body['flavorRef'] == 'vmops.tiny-id' and body['availability_zone'] == 'real'
    assert body['metadata'] == {'role': 'db', 'vmops_restored_from_point': 'n-2'}
    mapping = body['block_device_mapping_v2']
    assert [(m['boot_index'], m['uuid']) for m in mapping] == [(0, made['volumes'][0]['volume_id']),
                                                               (-1, made['volumes'][1]['volume_id'])]
    assert sets.check_restore(chain, {'instance': SERVER, 'restore_as': 'db1-copy'})['done']


def test_backup_run_full_then_increment_then_retention_keeps_the_chain():
    cloud = FakeCloud()
    cloud.add_server(SERVER, 'web1', [('/dev/vda', 'vol-root', 'vmops@ceph#ceph')])
    sets = sets_for(cloud)
    moments = iter(['2026-12-04T03:00:0%d' % i for i in range(1, 10)])

    def request(**changes):
        fields = dict(instance='web1', state='present', series='n', point=None, mode='auto', full_every=7,
                      retention=None, quiesce='auto', restore_as=None, name=None, timeout=60)
        fields.update(changes)
        return backup_chain.BackupRequest(**fields)

    def clock():
        return backup_chain.datetime.datetime.strptime(next(moments), '%Y-%m-%dT%H:%M:%S').replace(
            tzinfo=backup_chain.datetime.timezone.utc)

    first = backup_chain.BackupRun(sets, request(), clock=clock).result()
    second = backup_chain.BackupRun(sets, request(retention=1), clock=clock).result()
    assert first['point']['kind'] == 'full' and second['point']['kind'] == 'incremental'
    assert second['deleted'] == []      # the full is the increment's parent: kept
    assert len(sets.points(SERVER, 'n')) == 2


# Image-booted servers: a Glance image of the system disk plus backups of the data volumes -----------------

def test_image_booted_point_pauses_asks_for_the_image_first_and_names_it_in_every_backup():
    cloud = image_booted_cloud([('/dev/vdb', 'vol-data'), ('/dev/vdc', 'vol-logs')])
    sets = sets_for(cloud)
    point = sets.take(SERVER, 'n-1', 'n', 'full', None, 'auto')
    assert actions(cloud) == [('ACTION', 'pause'), ('POST', '/servers/%s/action' % SERVER), ('POST', '/backups'),
                              ('POST', '/backups'), ('ACTION', 'unpause'), ('PUT', '/backups/backup-02')]
    image_id = cloud.sent[1][2]
    assert image_id['createImage']['name'] == 'n-1-vda'
    properties = image_id['createImage']['metadata']
    assert properties['vmops_backup_point'] == 'n-1' and properties['vmops_backup_series'] == 'n'
    assert properties['vmops_backup_instance'] == SERVER and 'vmops_series' not in properties
    posted = [entry[2]['backup'] for entry in cloud.sent if entry[1] == '/backups']
    assert [b['volume_id'] for b in posted] == ['vol-data', 'vol-logs']
    assert set(b['metadata']['vmops_image_id'] for b in posted) == {'image-01'}
    assert point['complete'] and point['boot'] == 'image' and point['system_image'] == 'image-01'
    assert point['quiesced'] == 'paused'
    system = point['disks'][0]
    assert system['kind'] == 'image' and system['full_copy'] and not system['incremental']
    assert system['device'] == '/dev/vda' and system['bytes_written'] == 4096
    assert [d['device'] for d in point['disks'][1:]] == ['/dev/vdb', '/dev/vdc']
    assert point['backups'] == {'vol-data': 'backup-02', 'vol-logs': 'backup-03'}
    assert point['_server']['boot'] == 'image' and point['_server']['flavor'] == 'vmops.tiny'
    assert cloud.servers[SERVER]['status'] == 'ACTIVE'


def test_image_booted_check_take_plans_a_full_image_and_chains_only_the_volumes():
    cloud = image_booted_cloud()
    sets = sets_for(cloud)
    full = sets.take(SERVER, 'n-1', 'n', 'full', None, 'auto')
    assert sets.broken_reason(SERVER, full) is None
    del cloud.sent[:]
    plan = sets.check_take(SERVER, 'incremental', full, 'auto')
    assert cloud.sent == []
    assert plan['boot'] == 'image' and plan['pause'] and plan['quiesced'] == 'paused'
    assert plan['system_disk']['full_copy'] and not plan['system_disk']['incremental']
    assert [v['volume_id'] for v in plan['volumes']] == ['vol-data']
    increment = sets.take(SERVER, 'n-2', 'n', 'incremental', full, 'auto')
    assert increment['system_image'] != full['system_image']
    assert cloud.backups[increment['backups']['vol-data']]['is_incremental']
    assert not cloud.sent[1][2]['createImage'].get('incremental')


def test_image_booted_quiesce_off_and_a_stopped_server_are_not_paused():
    cloud = image_booted_cloud()
    sets = sets_for(cloud)
    point = sets.take(SERVER, 'n-1', 'n', 'full', None, 'off')
    assert point['quiesced'] == 'crash-consistent' and ('ACTION', 'pause') not in actions(cloud)
    cloud.servers[SERVER]['status'] = 'SHUTOFF'
    assert sets.check_take(SERVER, 'full', None, 'auto')['quiesced'] == 'stopped'


@pytest.mark.parametrize('change, message', [
    ('no data volume', 'Use instance_snapshot'),
    ('image requires quiesce', 'os_require_quiesce=yes'),
    ('quiesce required', 'quiesce=required'),
])
def test_image_booted_refusals_before_anything_is_sent(change, message):
    cloud = image_booted_cloud(() if change == 'no data volume' else (('/dev/vdb', 'vol-data'),))
    quiesce = 'required' if change == 'quiesce required' else 'auto'
    if change == 'image requires quiesce':
        cloud.images['image-base'].update(hw_qemu_guest_agent='yes', os_require_quiesce='yes')
    with pytest.raises(InvalidRequest) as caught:
        sets_for(cloud).take(SERVER, 'n-1', 'n', 'full', None, quiesce)
    assert message in caught.value.msg
    assert cloud.sent == []


def test_image_booted_point_is_incomplete_without_its_image_and_a_failed_image_removes_everything():
    cloud = image_booted_cloud()
    sets = sets_for(cloud)
    point = sets.take(SERVER, 'n-1', 'n', 'full', None, 'auto')
    cloud.images[point['system_image']]['status'] = 'killed'
    assert not sets.points(SERVER, 'n')[0]['complete']
    del cloud.images[point['system_image']]
    found = sets.points(SERVER, 'n')[0]
    assert not found['complete'] and found['disks'][0]['status'] == 'missing'

    cloud = image_booted_cloud()
    cloud.image_status = 'killed'
    sets = sets_for(cloud)
    with pytest.raises(VmopsError) as caught:
        sets.take(SERVER, 'n-1', 'n', 'full', None, 'auto')
    assert 'killed' in caught.value.msg
    assert cloud.backups == {} and list(cloud.images) == ['image-base']
    assert cloud.servers[SERVER]['status'] == 'ACTIVE'


def test_an_image_left_without_backups_is_an_incomplete_point_that_delete_removes():
    cloud = image_booted_cloud()
    sets = sets_for(cloud)
    cloud.images['image-left'] = {'id': 'image-left', 'name': 'n-0-vda', 'status': 'active', 'size': 1,
                                  'instance_uuid': SERVER, 'vmops_backup_point': 'n-0', 'vmops_backup_series': 'n',
                                  'vmops_backup_instance': SERVER, 'vmops_backup_taken_at': '2026-12-04T02:00:00Z'}
    # The same properties on an image Nova made of another server (launched from one of ours): not ours.
    cloud.images['image-other'] = dict(cloud.images['image-left'], id='image-other', instance_uuid=OTHER)
    points = sets.points(SERVER, 'n')
    assert [(p['name'], p['complete'], p['taken_at']) for p in points] == [('n-0', False, '2026-12-04T02:00:00Z')]
    sets.delete(points[0])
    assert 'image-left' not in cloud.images and 'image-other' in cloud.images


def test_image_booted_delete_removes_the_backups_then_the_image():
    cloud = image_booted_cloud()
    sets = sets_for(cloud)
    point = sets.take(SERVER, 'n-1', 'n', 'full', None, 'auto')
    del cloud.sent[:]
    sets.delete(sets.points(SERVER, 'n')[0])
    assert actions(cloud) == [('PUT', '/backups/%s' % point['backups']['vol-data']),
                              ('DELETE', '/backups/%s' % point['backups']['vol-data']),
                              ('DELETE', '/images/%s' % point['system_image'])]
    assert sets.points(SERVER, 'n') == []


def test_image_booted_restore_boots_from_the_points_image_with_the_data_volumes_restored():
    cloud = image_booted_cloud()
    sets = sets_for(cloud)
    full = sets.take(SERVER, 'n-1', 'n', 'full', None, 'auto')
    increment = sets.take(SERVER, 'n-2', 'n', 'incremental', full, 'auto')
    chain = backup_chain.chain_to(sets.points(SERVER, 'n'), 'n-2')
    plan = sets.check_restore(chain, {'instance': SERVER, 'restore_as': 'app1-copy'})
    assert plan['system_disk'] == {'device': '/dev/vda', 'from_image': increment['system_image']}
    assert plan['volumes'] == [{'device': '/dev/vdb', 'from_backup': increment['backups']['vol-data']}]
    made = sets.restore(chain, {'instance': SERVER, 'restore_as': 'app1-copy'})
    body = sets.backend.created[0]
    assert body['imageRef'] == increment['system_image']
    assert body['metadata'] == {'role': 'db', 'vmops_restored_from_point': 'n-2'}
    mapping = [(m['boot_index'], m['source_type'], m['destination_type'], m['uuid']) for m in body['block_device_mapping_v2']]
    assert mapping == [(0, 'image', 'local', increment['system_image']),
                       (-1, 'volume', 'volume', made['volumes'][0]['volume_id'])]
    assert made['system_disk']['from_image'] == increment['system_image']
    del cloud.images[increment['system_image']]
    with pytest.raises(InvalidRequest) as caught:
        sets.check_restore(chain, {'instance': SERVER, 'restore_as': 'app1-copy2'})
    assert 'cannot be relaunched' in caught.value.msg


def test_image_booted_point_drops_the_vmops_properties_nova_copied_from_the_servers_image():
    cloud = image_booted_cloud()
    # The server was launched from an instance_snapshot snapshot, whose facts Nova copies into new images.
    cloud.images['image-base'].update(vmops_instance_id=OTHER, vmops_series='n', vmops_complete='true')
    point = sets_for(cloud).take(SERVER, 'n-1', 'n', 'full', None, 'auto')
    image = cloud.images[point['system_image']]
    assert not [key for key in image if key.startswith('vmops_') and not key.startswith('vmops_backup_')]
    assert image['vmops_backup_point'] == 'n-1'
    assert actions(cloud)[2] == ('PATCH', '/images/%s' % point['system_image'])
