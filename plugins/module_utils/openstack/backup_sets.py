# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""instance_backup on OpenStack: a point is one cinder-backup backup of every volume of a server.

Why backups of the volumes themselves, not of Cinder snapshots: the Ceph backup driver makes an RBD
diff (only the changed objects, against the RBD snapshot it keeps from the volume's previous backup)
only when it backs up the volume itself; a backup made from a Cinder snapshot (`snapshot_id`) is
always a full copy, `incremental` or not. So the consistent moment of a point is each volume's own RBD
snapshot, taken by cinder-backup when the backup starts: for a server with more than one volume the
guest stays paused from the first backup request until every backup has finished, so that all those
snapshots hold the same moment (an increment takes a second or two). A one-volume server is never
paused: its RBD snapshot is one atomic, crash-consistent moment.

Cinder bases an increment on the volume's newest backup, whatever it belongs to: an increment is only
taken when the parent point's backup is still the newest backup of every volume (`broken_reason`).

The point's record is the backups' metadata (strings of at most 255 characters): every backup has
vmops_point, vmops_series, vmops_instance, vmops_kind, vmops_parent, vmops_taken_at, vmops_device,
vmops_disks (how many backups the point has); the boot volume's backup (the record) also has the
server's record (flavor, networks, metadata, key pair, zone) as JSON cut into vmops_server_0..N, and
vmops_complete, written 'true' last, once every backup was read back available and of the kind asked.

Every request goes through the backend's request layer: Cinder v3 at BLOCK_STORAGE_MICROVERSION.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import time

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import launch
from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.backend import describe
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.backup_chain import (
    INCREMENTAL, BackupSets, iso_utc, now_utc)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import (
    InvalidRequest, RequestFailed, ResourceNotFound, VmopsError)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import Deadline, wait_until
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.snapshot import OpenStackSnapshots

GIB = 1024 ** 3
# 3.43: backup metadata; backup creation also takes `snapshot_id` (3.0) and `incremental`/`force`.
BLOCK_STORAGE_MICROVERSION = '3.43'
BACKUP_FAILED = ('error', 'error_deleting', 'deleted')
VOLUME_FAILED = ('error', 'error_restoring', 'error_extending', 'deleted')
# Storage protocols of Cinder pools whose volumes the Ceph backup driver backs up as RBD diffs.
DIFF_PROTOCOLS = ('ceph', 'rbd')
SERVER_CHUNK = 250
RESTORED_FROM_KEY = 'vmops_restored_from_point'
STATES_TO_BACK_UP = (states.RUNNING, states.STOPPED, states.PAUSED, states.SUSPENDED)


def _device_label(device, volume_id):
    return (device or volume_id).split('/')[-1]


def _chunks(text):
    return dict(('vmops_server_%d' % index, text[start:start + SERVER_CHUNK])
                for index, start in enumerate(range(0, len(text), SERVER_CHUNK)))


def _server_record(metadata):
    pieces, index = [], 0
    while 'vmops_server_%d' % index in metadata:
        pieces.append(metadata['vmops_server_%d' % index])
        index += 1
    try:
        return json.loads(''.join(pieces)) if pieces else {}
    except ValueError:
        return {}


def _order(backup):
    return (backup.get('data_timestamp') or backup.get('created_at') or '', backup.get('id') or '')


class CinderBackupSets(BackupSets):
    """BackupSets over cinder-backup (see the module docstring for what a point is)."""

    def __init__(self, backend):
        self.backend = backend
        self.model = backend.model
        self.snapshots = OpenStackSnapshots(backend)

    # Plumbing ----------------------------------------------------------------------------------

    def _deadline(self):
        deadline = self.deadline or Deadline(600)
        if hasattr(self.backend, 'bound_by'):
            self.backend.bound_by(deadline)
        return deadline

    def _cinder(self, method, path, **kwargs):
        return self.backend.requests.call('block_storage', method, path, microversion=BLOCK_STORAGE_MICROVERSION,
                                          **kwargs)

    def _backup(self, backup_id):
        try:
            return self._cinder('GET', '/backups/%s' % backup_id).json()['backup']
        except ResourceNotFound:
            return None

    def _volume(self, volume_id):
        try:
            return self._cinder('GET', '/volumes/%s' % volume_id).json()['volume']
        except ResourceNotFound:
            return None

    def _backups(self, **params):
        backups, params = [], dict(params, limit=200)
        marker = None
        while True:
            if marker:
                params['marker'] = marker
            page = self._cinder('GET', '/backups/detail', params=params).json().get('backups', [])
            backups.extend(page)
            if len(page) < 200:
                return backups
            marker = page[-1]['id']

    def _server(self, instance):
        return self.backend.nova('GET', '/servers/%s' % instance).json()['server']

    def _disks(self, instance):
        """[(device, volume_id)] of the server, boot volume first, then by device name."""
        body = self.backend.nova('GET', '/servers/%s/os-volume_attachments' % instance).json()
        attached = sorted((item.get('device') or '', item['volumeId']) for item in body.get('volumeAttachments', []))
        return attached

    # The contract ------------------------------------------------------------------------------

    def find_instance(self, identifier):
        return self.backend.find(identifier)

    def describe(self, instance):
        observation = self.backend.observe(instance)
        return {'name': observation.name, 'id': observation.id, 'state': observation.state}

    def location(self):
        return self.backend.location()

    def request_count(self):
        return self.backend.request_count()

    def points(self, instance, series):
        grouped = {}
        for backup in self._backups():
            metadata = backup.get('metadata') or {}
            if metadata.get('vmops_instance') != instance or metadata.get('vmops_series') != series:
                continue
            if not metadata.get('vmops_point'):
                continue
            grouped.setdefault(metadata['vmops_point'], []).append(backup)
        return [self._point(name, backups) for name, backups in grouped.items()]

    def _point(self, name, backups):
        backups = sorted(backups, key=lambda b: (b['metadata'].get('vmops_device') or '', b['id']))
        records = [b for b in backups if 'vmops_server_0' in b['metadata']]
        record = records[0] if records else None
        first = (record or backups[0])['metadata']
        try:
            expected = int(first.get('vmops_disks') or 0)
        except ValueError:
            expected = 0
        complete = (record is not None and record['metadata'].get('vmops_complete') == 'true'
                    and len(backups) == expected and all(b.get('status') == 'available' for b in backups))
        disks = [{'device': b['metadata'].get('vmops_device'), 'volume_id': b.get('volume_id'), 'backup_id': b['id'],
                  'status': b.get('status'), 'incremental': bool(b.get('is_incremental')),
                  'size_bytes': (b.get('size') or 0) * GIB,
                  # cinder-backup does not tell how many bytes an RBD diff moved; `rbd du` on its pool does.
                  'bytes_written': None} for b in backups]
        return {
            'name': name, 'series': first.get('vmops_series'), 'instance': first.get('vmops_instance'),
            'kind': first.get('vmops_kind'), 'parent': first.get('vmops_parent') or None,
            'taken_at': first.get('vmops_taken_at'), 'complete': complete, 'disks': disks,
            'quiesced': first.get('vmops_quiesced'),
            'backups': dict((b.get('volume_id'), b['id']) for b in backups),
            '_backups': backups, '_record': record,
            '_server': _server_record(record['metadata']) if record else {},
        }

    def broken_reason(self, instance, point):
        volumes = sorted(volume_id for _device, volume_id in self._disks(instance))
        if volumes != sorted(point.get('backups') or {}):
            return ('the volumes of the server changed since %s (now %s, then %s)'
                    % (point['name'], ', '.join(volumes), ', '.join(sorted(point.get('backups') or {}))))
        for volume_id, backup_id in sorted(point['backups'].items()):
            others = [b for b in self._backups(volume_id=volume_id) if b.get('volume_id') == volume_id
                      and b.get('status') not in ('deleting', 'error', 'error_deleting')]
            newest = max(others, key=_order) if others else None
            if newest is None or newest['id'] != backup_id:
                return ('Cinder bases an increment of volume %s on its newest backup, %s, which is not part of %s'
                        % (volume_id, newest['id'] if newest else '(none)', point['name']))
        return None

    def check_take(self, instance, kind, parent, quiesce):
        server = self._server(instance)
        observation = self.backend.observe(instance)
        if observation.task:
            raise InvalidRequest('Server %s is busy (%s); try again when it has settled.'
                                 % (server.get('name'), observation.task))
        if observation.state not in STATES_TO_BACK_UP:
            raise InvalidRequest('Server %s is %s: backups are taken of running, stopped, paused or suspended servers.'
                                 % (server.get('name'), observation.state))
        if server.get('image'):
            raise InvalidRequest('Server %s boots from an image: instance_backup on OpenStack backs up servers whose '
                                 'every disk is a Cinder volume (use instance_snapshot for its system disk).'
                                 % server.get('name'))
        if quiesce == 'required':
            raise InvalidRequest('quiesce=required: Nova freezes a guest\'s file systems only for its own snapshots '
                                 '(createImage), not for Cinder backups. Use quiesce=auto (a server with several '
                                 'volumes is paused while they are backed up) or off.')
        disks = self._disks(instance)
        if not disks:
            raise InvalidRequest('Server %s has no volume to back up.' % server.get('name'))
        volumes = []
        for device, volume_id in disks:
            volume = self._volume(volume_id) or {}
            if volume.get('status') not in ('in-use', 'available'):
                raise InvalidRequest('Volume %s (%s) of server %s is %s; backups need it in-use or available.'
                                     % (volume_id, device, server.get('name'), volume.get('status')))
            volumes.append({'device': device, 'volume_id': volume_id, 'size_gb': volume.get('size'),
                            'force': volume.get('status') == 'in-use', '_volume': volume})
        self._refuse_volumes_without_diffs(server, volumes)
        if kind == INCREMENTAL and parent is not None:
            missing = [v['volume_id'] for v in volumes if v['volume_id'] not in (parent.get('backups') or {})]
            if missing:
                raise InvalidRequest('An increment on %s needs a backup of every volume in it; %s has none of %s.'
                                     % (parent['name'], parent['name'], ', '.join(missing)))
        running = observation.state == states.RUNNING
        if observation.state == states.STOPPED:
            consistency = 'stopped'
        elif observation.state in (states.PAUSED, states.SUSPENDED):
            consistency = 'paused'
        elif len(volumes) > 1 and quiesce != 'off':
            consistency = 'paused'
        else:
            consistency = 'crash-consistent'
        return {'volumes': [dict((k, v) for k, v in item.items() if not k.startswith('_')) for item in volumes],
                'quiesced': consistency, 'pause': running and consistency == 'paused', '_server': server}

    def _refuse_volumes_without_diffs(self, server, volumes):
        """A volume whose pool is not RBD would be copied whole every time: refused, naming it. The pools'
        protocol is an admin read; without it (a member's run) the check is left to Cinder."""
        hosts = [v['_volume'].get('os-vol-host-attr:host') for v in volumes]
        if not all(hosts):
            return
        try:
            pools = self._cinder('GET', '/scheduler-stats/get_pools', params={'detail': 'true'}).json().get('pools', [])
        except RequestFailed as error:
            if error.details.get('http_status') == 403:
                return
            raise
        protocols = dict((pool.get('name'), str((pool.get('capabilities') or {}).get('storage_protocol') or '').lower())
                         for pool in pools)
        for volume, host in zip(volumes, hosts):
            protocol = protocols.get(host)
            if protocol not in DIFF_PROTOCOLS:
                raise InvalidRequest('Volume %s (%s) of server %s is on back end %s (storage protocol %s), whose '
                                     'volumes cinder-backup cannot back up incrementally (RBD diffs need Ceph RBD); '
                                     'nothing was backed up.' % (volume['volume_id'], volume['device'], server.get('name'),
                                                                 host, protocol or 'unknown'))

    def take(self, instance, name, series, kind, parent, quiesce):
        deadline = self._deadline()
        plan = self.check_take(instance, kind, parent, quiesce)
        server = plan.pop('_server')
        volumes = plan['volumes']
        taken_at = iso_utc(now_utc())
        common = {'vmops_point': name, 'vmops_series': series, 'vmops_instance': instance, 'vmops_kind': kind,
                  'vmops_parent': (parent or {}).get('name') or '', 'vmops_taken_at': taken_at,
                  'vmops_disks': str(len(volumes)), 'vmops_quiesced': plan['quiesced']}
        recorded = self.snapshots._recorded(server, {'contains': volumes, 'kind': 'volume_backed'})
        created = []
        paused_at = unpaused_at = None
        try:
            if plan['pause']:
                paused_at = time.monotonic()
                self.snapshots._set_paused(instance, True, deadline)
            for index, volume in enumerate(volumes):
                metadata = dict(common, vmops_device=volume['device'] or '')
                if index == 0:
                    metadata.update(_chunks(json.dumps(recorded, sort_keys=True, separators=(',', ':'))))
                    metadata['vmops_complete'] = 'false'
                created.append(self._create_backup(instance, name, volume, kind, metadata))
            for backup_id in created:
                self._wait_backup(backup_id, deadline)
        except Exception:
            self._discard(created)
            raise
        finally:
            if paused_at is not None:
                unpaused_at = self.snapshots._unpause_quietly(instance, deadline)
        try:
            backups = [self._verified(backup_id, kind) for backup_id in created]
            record = backups[0]
            self._set_metadata(record, dict(record.get('metadata') or {}, vmops_complete='true'))
        except Exception:
            self._discard(created)
            raise
        point = self._point(name, [self._backup(backup_id) for backup_id in created])
        point['guest_paused_seconds'] = round(unpaused_at - paused_at, 3) if paused_at is not None else 0.0
        return point

    def _create_backup(self, instance, name, volume, kind, metadata):
        body = {'backup': {'volume_id': volume['volume_id'], 'name': '%s-%s' % (name, _device_label(volume['device'],
                                                                                                    volume['volume_id'])),
                           'description': 'vmops.lifecycle instance_backup point %s of server %s' % (name, instance),
                           'incremental': kind == INCREMENTAL, 'force': volume['force'], 'metadata': metadata}}
        # Not resent when it may have reached Cinder: a backup made anyway carries the point's metadata, so the
        # next run finds it as an incomplete point and removes it.
        try:
            return self._cinder('POST', '/backups', json=body).json()['backup']['id']
        except RequestFailed as error:
            error.msg = 'Cinder refused to back up volume %s (%s): %s' % (
                volume['volume_id'], volume['device'], error.details.get('service_message') or error.msg)
            raise

    def _wait_backup(self, backup_id, deadline):
        def failed(backup):
            if backup.get('status') not in BACKUP_FAILED:
                return None
            return 'the backup is %s: %s' % (backup.get('status'), backup.get('fail_reason') or 'no reason given')
        return wait_until(lambda: self._backup(backup_id) or {'status': 'deleted'},
                          lambda backup: backup.get('status') == 'available',
                          lambda backup: backup.get('status'), 'backup %s to be available' % backup_id, deadline,
                          failure=failed)

    def _verified(self, backup_id, kind):
        backup = self._backup(backup_id)
        if backup is None or backup.get('status') != 'available':
            raise VmopsError('Backup %s is %s when read back.' % (backup_id, (backup or {}).get('status', 'gone')))
        if bool(backup.get('is_incremental')) != (kind == INCREMENTAL):
            raise VmopsError('Backup %s of volume %s is %s, but a %s backup was asked for.'
                             % (backup_id, backup.get('volume_id'),
                                'incremental' if backup.get('is_incremental') else 'full', kind))
        return backup

    def _set_metadata(self, backup, metadata):
        def applied():
            now = self._backup(backup['id']) or {}
            return (now.get('metadata') or {}) == metadata
        self._cinder('PUT', '/backups/%s' % backup['id'], json={'backup': {'metadata': metadata}}, verify=applied)

    def _discard(self, backup_ids):
        """Best effort after a failure: remove this run's backups (newest first); what stays is an incomplete
        point that the next run removes."""
        for backup_id in reversed(backup_ids):
            try:
                self._delete_backup(backup_id, self._deadline())
            except Exception:  # pylint: disable=broad-except
                pass

    def delete(self, point):
        deadline = self._deadline()
        record = point.get('_record')
        if record is not None and (record.get('metadata') or {}).get('vmops_complete') == 'true':
            # First make it not count: a run failing below never leaves a "complete" half point.
            self._set_metadata(record, dict(record['metadata'], vmops_complete='false'))
        for backup in sorted(point.get('_backups') or [], key=_order, reverse=True):
            self._delete_backup(backup['id'], deadline)

    def _delete_backup(self, backup_id, deadline):
        def deleting():
            now = self._backup(backup_id)
            return now is None or now.get('status') in ('deleting', 'deleted')
        try:
            self._cinder('DELETE', '/backups/%s' % backup_id, verify=deleting)
        except ResourceNotFound:
            return
        except RequestFailed as error:
            error.msg = 'Cinder refused to delete backup %s: %s' % (
                backup_id, error.details.get('service_message') or error.msg)
            raise
        wait_until(lambda: self._backup(backup_id) or {'status': 'gone'},
                   lambda backup: backup.get('status') == 'gone', lambda backup: backup.get('status'),
                   'backup %s to be deleted' % backup_id, deadline,
                   failure=lambda backup: 'it is %s' % backup.get('status')
                   if backup.get('status') in ('error', 'error_deleting') else None)

    # Restoring ---------------------------------------------------------------------------------

    def check_restore(self, chain, target):
        point = chain[-1]
        if not target.get('restore_as'):
            raise InvalidRequest('On OpenStack a point is restored as a new server (restore_as): Cinder restores '
                                 'only into available volumes, and a server\'s boot volume cannot be detached.')
        if point.get('instance') != target.get('instance'):
            raise InvalidRequest('Point %s is a backup of server %s, not of %s.'
                                 % (point['name'], point.get('instance'), target.get('instance')))
        existing = self.backend.find(target['restore_as'])
        if existing is not None:
            server = self._server(existing)
            if (server.get('metadata') or {}).get(RESTORED_FROM_KEY) == point['name']:
                return {'done': True, 'instance': {'name': server.get('name'), 'id': server['id']}}
            raise InvalidRequest('A server named %s already exists (%s) and was not restored from %s; choose another '
                                 'restore_as.' % (target['restore_as'], existing, point['name']))
        recorded = point.get('_server') or {}
        if not recorded.get('flavor'):
            raise InvalidRequest('Point %s records no flavor; it cannot be relaunched.' % point['name'])
        for network in recorded.get('networks') or []:
            self.backend.resolve('network', network)
        self.backend.find_flavor(recorded['flavor'])
        return {'restore_as': target['restore_as'], 'volumes': [
            {'device': disk['device'], 'from_backup': disk['backup_id']} for disk in point['disks']]}

    def restore(self, chain, target):
        deadline = self._deadline()
        started = time.monotonic()
        plan = self.check_restore(chain, target)
        if plan.get('done'):
            return plan
        point = chain[-1]
        name = target['restore_as']
        made = []
        try:
            for disk in point['disks']:
                # Cinder restores an increment by replaying its whole chain itself.
                body = {'restore': {'name': '%s-%s' % (name, _device_label(disk['device'], disk['volume_id']))}}
                restored = self._cinder('POST', '/backups/%s/restore' % disk['backup_id'], json=body).json()['restore']
                made.append({'device': disk['device'], 'volume_id': restored['volume_id'],
                             'from_backup': disk['backup_id']})
            for item in made:
                volume = self._wait_volume(item['volume_id'], deadline)
                item['size_gb'] = volume.get('size')
        except Exception as error:
            if isinstance(error, VmopsError):
                error.details['volumes_made'] = made
            raise
        server_id = self._relaunch(point, name, made, deadline)
        return {'instance': {'name': name, 'id': server_id}, 'volumes': made,
                'restore_seconds': round(time.monotonic() - started, 3)}

    def _wait_volume(self, volume_id, deadline):
        return wait_until(lambda: self._volume(volume_id) or {'status': 'deleted'},
                          lambda volume: volume.get('status') == 'available',
                          lambda volume: volume.get('status'), 'restored volume %s to be available' % volume_id,
                          deadline, failure=lambda volume: ('the volume is %s' % volume.get('status'))
                          if volume.get('status') in VOLUME_FAILED else None)

    def _relaunch(self, point, name, made, deadline):
        recorded = point.get('_server') or {}
        metadata = dict(recorded.get('metadata') or {})
        metadata[RESTORED_FROM_KEY] = point['name']
        request = launch.LaunchRequest(
            name=name, image=None, snapshot=None, volume=made[0]['volume_id'], boot_volume_size=None,
            delete_volume_on_termination=False, flavor=recorded['flavor'], networks=recorded.get('networks') or [],
            key_name=recorded.get('key_name'), metadata=metadata, availability_zone=recorded.get('availability_zone'),
            keep_failed=True, wait=True, timeout=max(1, int(deadline.remaining())))
        body = launch.server_body(self.backend, request)
        for item in made[1:]:
            body['block_device_mapping_v2'].append({'boot_index': -1, 'uuid': item['volume_id'], 'source_type': 'volume',
                                                    'destination_type': 'volume', 'delete_on_termination': False})
        server_id = self.backend.create_server(body)
        wait_until(lambda: self.backend.observe(server_id), lambda o: o.state == states.RUNNING and not o.task,
                   describe, 'restored server %s to become active' % name, deadline,
                   failure=lambda o: ('the launch failed: %s' % o.fault) if o.state == states.ERROR else None)
        return server_id
