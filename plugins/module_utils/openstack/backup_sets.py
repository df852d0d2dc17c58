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

An image-booted server's system disk is no Cinder volume: its point adds a Glance snapshot image of it
(Nova's createImage, as instance_snapshot makes), always a full copy and part of no chain, to the backups
of its data volumes (full or incremental as above). The backups' metadata name the image
(vmops_image_id, vmops_system_device); the image's properties name the point (vmops_backup_point,
vmops_backup_series, vmops_backup_instance, vmops_backup_taken_at), so an image left by a failed run is
still found, as an incomplete point, and removed. A running server is paused from the image request until
the backups are available and Nova's snapshot task has ended (Nova refuses to unpause while it runs).
Such a point is restored as a new server booted from its image, the data volumes restored and attached.

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
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.snapshot import JSON_PATCH, OpenStackSnapshots, is_yes

GIB = 1024 ** 3
# 3.43: backup metadata; backup creation also takes `snapshot_id` (3.0) and `incremental`/`force`.
BLOCK_STORAGE_MICROVERSION = '3.43'
BACKUP_FAILED = ('error', 'error_deleting', 'deleted')
VOLUME_FAILED = ('error', 'error_restoring', 'error_extending', 'deleted')
# Storage protocols of Cinder pools whose volumes the Ceph backup driver backs up as RBD diffs.
DIFF_PROTOCOLS = ('ceph', 'rbd')
SERVER_CHUNK = 250
# Image properties naming the point an image belongs to (not instance_snapshot's vmops_series/_instance_id,
# so that instance_snapshot never takes a backup's image for one of its snapshots).
IMAGE_POINT, IMAGE_SERIES, IMAGE_INSTANCE, IMAGE_TAKEN_AT = (
    'vmops_backup_point', 'vmops_backup_series', 'vmops_backup_instance', 'vmops_backup_taken_at')
IMAGE_GONE = ('deleted', 'pending_delete')
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
        images = {}
        for image in self._point_images(instance, series):
            images.setdefault(image[IMAGE_POINT], []).append(image)
        return [self._point(name, grouped.get(name, []), images.get(name, []))
                for name in set(grouped) | set(images)]

    def _point_images(self, instance, series):
        """The system-disk images of the series' points. Nova copies a server's image properties into its
        snapshots, so a server launched from one of these images passes them on: only an image Nova made of
        this very server (instance_uuid) belongs to it."""
        found = self.snapshots._images(**{IMAGE_INSTANCE: instance, IMAGE_SERIES: series})
        return [image for image in found if image.get(IMAGE_INSTANCE) == instance and image.get(IMAGE_SERIES) == series
                and image.get('instance_uuid') == instance and image.get(IMAGE_POINT)
                and image.get('status') not in IMAGE_GONE]

    def _point(self, name, backups, images=()):
        backups = sorted(backups, key=lambda b: (b['metadata'].get('vmops_device') or '', b['id']))
        records = [b for b in backups if 'vmops_server_0' in b['metadata']]
        record = records[0] if records else None
        if backups:
            first = (record or backups[0])['metadata']
        else:
            # Only an image, left by a run that failed before its backups existed (or after they were deleted).
            newest = max(images, key=lambda image: image.get('created_at') or '')
            first = {'vmops_series': newest.get(IMAGE_SERIES), 'vmops_instance': newest.get(IMAGE_INSTANCE),
                     'vmops_taken_at': newest.get(IMAGE_TAKEN_AT) or newest.get('created_at'),
                     'vmops_image_id': newest['id']}
        try:
            expected = int(first.get('vmops_disks') or 0)
        except ValueError:
            expected = 0
        image_id = first.get('vmops_image_id')
        image = None
        if image_id:
            image = ([found for found in images if found['id'] == image_id] or [None])[0]
            if image is None and backups:
                image = self.snapshots._image(image_id)
        complete = (record is not None and record['metadata'].get('vmops_complete') == 'true'
                    and len(backups) == expected and all(b.get('status') == 'available' for b in backups)
                    and (not image_id or (image or {}).get('status') == 'active'))
        disks = []
        if image_id:
            disks.append({'device': first.get('vmops_system_device') or None, 'kind': 'image', 'image_id': image_id,
                          'volume_id': None, 'backup_id': None, 'status': (image or {}).get('status', 'missing'),
                          # A Glance snapshot holds the whole disk every time: it belongs to no chain.
                          'incremental': False, 'full_copy': True,
                          'size_bytes': (image or {}).get('virtual_size'), 'bytes_written': (image or {}).get('size')})
        disks.extend({'device': b['metadata'].get('vmops_device'), 'kind': 'volume_backup', 'volume_id': b.get('volume_id'),
                      'backup_id': b['id'], 'status': b.get('status'), 'incremental': bool(b.get('is_incremental')),
                      'size_bytes': (b.get('size') or 0) * GIB,
                      # cinder-backup does not tell how many bytes an RBD diff moved; `rbd du` on its pool does.
                      'bytes_written': None} for b in backups)
        return {
            'name': name, 'series': first.get('vmops_series'), 'instance': first.get('vmops_instance'),
            'kind': first.get('vmops_kind'), 'parent': first.get('vmops_parent') or None,
            'taken_at': first.get('vmops_taken_at'), 'complete': complete, 'disks': disks,
            'quiesced': first.get('vmops_quiesced'), 'boot': 'image' if image_id else 'volume',
            'system_image': image_id or None,
            'backups': dict((b.get('volume_id'), b['id']) for b in backups),
            '_backups': backups, '_record': record, '_image': image,
            # Every image of this point, the one the backups name and any a failed run left: delete removes them all.
            '_images': list(images) + ([image] if image is not None and image not in images else []),
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
        image_booted = bool(server.get('image'))
        if quiesce == 'required':
            raise InvalidRequest('quiesce=required: Nova freezes a guest\'s file systems only for its own snapshots '
                                 '(createImage), not for Cinder backups. Use quiesce=auto (a server with several '
                                 'volumes is paused while they are backed up) or off.')
        disks = self._disks(instance)
        if not disks and image_booted:
            raise InvalidRequest('Server %s boots from an image and has no data volume: a point would be only a Glance '
                                 'image of its system disk, a full copy every time, with nothing to chain. Use '
                                 'instance_snapshot, which keeps such images in series with retention.' % server.get('name'))
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
        elif len(volumes) + (1 if image_booted else 0) > 1 and quiesce != 'off':
            consistency = 'paused'
        else:
            consistency = 'crash-consistent'
        pause = running and consistency == 'paused'
        plan = {'volumes': [dict((k, v) for k, v in item.items() if not k.startswith('_')) for item in volumes],
                'quiesced': consistency, 'pause': pause, 'boot': 'image' if image_booted else 'volume',
                '_server': server}
        if image_booted:
            self._refuse_quiesce_of_paused(server, pause)
            plan['system_disk'] = {'device': server.get('OS-EXT-SRV-ATTR:root_device_name') or '/dev/vda',
                                   'kind': 'image', 'incremental': False, 'full_copy': True,
                                   'from': 'a new Glance snapshot image of the server (Nova createImage), always a '
                                           'full copy, part of no chain'}
        return plan

    def _refuse_quiesce_of_paused(self, server, pause):
        """Nova's createImage fails when the server's image has os_require_quiesce=yes and the guest cannot be
        frozen, which a paused guest cannot."""
        if not pause:
            return
        image = self.snapshots._image((server.get('image') or {}).get('id')) or {}
        if is_yes(image.get('os_require_quiesce')):
            raise InvalidRequest('Server %s boots from image %s, which has os_require_quiesce=yes: Nova must freeze '
                                 'its guest for createImage, and the guest of a server paused for one consistent '
                                 'point cannot be frozen. Use quiesce=off (the system disk is then frozen by Nova and '
                                 'each disk has its own moment) or stop the server first.'
                                 % (server.get('name'), image.get('name') or image.get('id')))

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
        image_booted = plan['boot'] == 'image'
        taken_at = iso_utc(now_utc())
        common = {'vmops_point': name, 'vmops_series': series, 'vmops_instance': instance, 'vmops_kind': kind,
                  'vmops_parent': (parent or {}).get('name') or '', 'vmops_taken_at': taken_at,
                  'vmops_disks': str(len(volumes)), 'vmops_quiesced': plan['quiesced']}
        recorded = self.snapshots._recorded(server, {'contains': volumes,
                                                     'kind': 'image' if image_booted else 'volume_backed'})
        created = []
        image_id = None
        paused_at = unpaused_at = None
        try:
            if plan['pause']:
                paused_at = time.monotonic()
                self.snapshots._set_paused(instance, True, deadline)
            if image_booted:
                # First, so that every backup can name it.
                device = plan['system_disk']['device']
                image_id = self.snapshots._create_image(instance, '%s-%s' % (name, _device_label(device, 'system')), {
                    IMAGE_POINT: name, IMAGE_SERIES: series, IMAGE_INSTANCE: instance, IMAGE_TAKEN_AT: taken_at})
                common.update(vmops_image_id=image_id, vmops_system_device=device)
                self._drop_inherited_properties(image_id)
            for index, volume in enumerate(volumes):
                metadata = dict(common, vmops_device=volume['device'] or '')
                if index == 0:
                    metadata.update(_chunks(json.dumps(recorded, sort_keys=True, separators=(',', ':'))))
                    metadata['vmops_complete'] = 'false'
                created.append(self._create_backup(instance, name, volume, kind, metadata))
            for backup_id in created:
                self._wait_backup(backup_id, deadline)
        except Exception:
            self._discard(created, image_id)
            raise
        finally:
            if paused_at is not None:
                # Waits for Nova's snapshot task to end first: Nova refuses to unpause while it runs.
                unpaused_at = self.snapshots._unpause_quietly(instance, deadline)
        try:
            image = self._verified_image(image_id, instance, name, deadline) if image_id else None
            backups = [self._verified(backup_id, kind) for backup_id in created]
            record = backups[0]
            self._set_metadata(record, dict(record.get('metadata') or {}, vmops_complete='true'))
        except Exception:
            self._discard(created, image_id)
            raise
        point = self._point(name, [self._backup(backup_id) for backup_id in created], [image] if image else [])
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

    def _drop_inherited_properties(self, image_id):
        """Nova copies the server's image properties into its snapshot: a server launched from an
        instance_snapshot snapshot (or another point's image) would pass that image's vmops_* facts on, and
        instance_snapshot would count this image as one of its snapshots. Only this point's own stay."""
        image = self.snapshots._image(image_id) or {}
        ours = (IMAGE_POINT, IMAGE_SERIES, IMAGE_INSTANCE, IMAGE_TAKEN_AT)
        stale = sorted(key for key in image if key.startswith('vmops_') and key not in ours)
        if stale:
            self.snapshots._glance('PATCH', '/images/%s' % image_id, headers={'Content-Type': JSON_PATCH},
                                   json=[{'op': 'remove', 'path': '/%s' % key} for key in stale])

    def _verified_image(self, image_id, instance, name, deadline):
        image = self.snapshots._wait_image(image_id, deadline)
        if image.get('instance_uuid') != instance or image.get(IMAGE_POINT) != name:
            raise VmopsError('Image %s is not the snapshot of server %s for point %s when read back (instance_uuid %s, '
                             '%s %s).' % (image_id, instance, name, image.get('instance_uuid'), IMAGE_POINT,
                                          image.get(IMAGE_POINT)))
        if not image.get('size'):
            raise VmopsError('Image %s of point %s is active but holds no data.' % (image_id, name))
        return image

    def _set_metadata(self, backup, metadata):
        def applied():
            now = self._backup(backup['id']) or {}
            return (now.get('metadata') or {}) == metadata
        self._cinder('PUT', '/backups/%s' % backup['id'], json={'backup': {'metadata': metadata}}, verify=applied)

    def _discard(self, backup_ids, image_id=None):
        """Best effort after a failure: remove this run's backups (newest first) and image; what stays is an
        incomplete point that the next run removes."""
        for backup_id in reversed(backup_ids):
            try:
                self._delete_backup(backup_id, self._deadline())
            except Exception:  # pylint: disable=broad-except
                pass
        if image_id:
            try:
                self.snapshots.delete_image(image_id)
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
        # Last: a point whose backups could not all be deleted still names its image, and stays findable.
        for image in point.get('_images') or []:
            self.snapshots.delete_image(image['id'])

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
        plan = {'restore_as': target['restore_as'], 'volumes': [
            {'device': disk['device'], 'from_backup': disk['backup_id']} for disk in point['disks'] if disk['backup_id']]}
        if point.get('boot') == 'image':
            image = self.snapshots._image(point['system_image']) or {}
            if image.get('status') != 'active':
                raise InvalidRequest('The system disk of point %s is image %s, which is %s: the point cannot be '
                                     'relaunched.' % (point['name'], point['system_image'], image.get('status', 'gone')))
            plan['system_disk'] = {'device': point['disks'][0]['device'], 'from_image': point['system_image']}
        for network in recorded.get('networks') or []:
            self.backend.resolve('network', network)
        self.backend.find_flavor(recorded['flavor'])
        return plan

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
            for disk in [disk for disk in point['disks'] if disk['backup_id']]:
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
        restored = {'instance': {'name': name, 'id': server_id}, 'volumes': made,
                    'restore_seconds': round(time.monotonic() - started, 3)}
        if plan.get('system_disk'):
            restored['system_disk'] = plan['system_disk']
        return restored

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
        image_id = point.get('system_image') if point.get('boot') == 'image' else None
        request = launch.LaunchRequest(
            name=name, image=image_id, snapshot=None, volume=None if image_id else made[0]['volume_id'],
            boot_volume_size=None, delete_volume_on_termination=False, flavor=recorded['flavor'],
            networks=recorded.get('networks') or [], key_name=recorded.get('key_name'), metadata=metadata,
            availability_zone=recorded.get('availability_zone'), keep_failed=True, wait=True,
            timeout=max(1, int(deadline.remaining())))
        body = launch.server_body(self.backend, request)
        if image_id:
            # With other block devices, the request names the image's own mapping too (Nova expects the
            # client to add it).
            body['block_device_mapping_v2'] = [{'boot_index': 0, 'uuid': image_id, 'source_type': 'image',
                                                'destination_type': 'local', 'delete_on_termination': True}]
        for item in (made if image_id else made[1:]):
            body['block_device_mapping_v2'].append({'boot_index': -1, 'uuid': item['volume_id'], 'source_type': 'volume',
                                                    'destination_type': 'volume', 'delete_on_termination': False})
        server_id = self.backend.create_server(body)
        wait_until(lambda: self.backend.observe(server_id), lambda o: o.state == states.RUNNING and not o.task,
                   describe, 'restored server %s to become active' % name, deadline,
                   failure=lambda o: ('the launch failed: %s' % o.fault) if o.state == states.ERROR else None)
        return server_id
