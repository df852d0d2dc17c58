# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""OpenStack snapshots: Nova createImage, Cinder volume snapshots, Glance image properties.

A snapshot is one Glance image (image_type=snapshot). The module's facts are image properties:
  vmops_instance_id, vmops_instance_name, vmops_series, vmops_created_at (microseconds), vmops_kind,
  vmops_complete ('true' once everything was verified; 'false' while taking or deleting it),
  vmops_volume_snapshots (JSON: the Cinder snapshots of include_volumes), vmops_recorded (JSON of what
  a relaunch needs), vmops_quiesced, vmops_consistency, vmops_guest_paused_seconds, vmops_quiesce_error
  (why a snapshot that was to be quiesced is crash-consistent instead).
Nova's volume-backed snapshots list their Cinder snapshots in the image's block_device_mapping.

Every request goes through the backend's one counted session: compute at the backend's
microversion, Glance v2, Cinder v3.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re
import time

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.backend import describe
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InvalidRequest, RequestFailed, ResourceNotFound
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.backend import _looks_like_uuid
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.snapshot import SnapshotDriver, iso_utc, now_utc
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import Deadline, wait_until

GIB = 1024 ** 3
# 3.40: revert to snapshot is there; snapshot listing filters by metadata.
CINDER_MICROVERSION = '3.40'
IMAGE_FAILED = ('killed', 'deleted', 'pending_delete', 'deactivated')
SNAPSHOT_FAILED = ('error', 'error_deleting')
# Nova's task states while the disk is still being captured (after these, only the upload remains).
CAPTURING = ('image_snapshot', 'image_snapshot_pending', 'image_pending_upload')
JSON_PATCH = 'application/openstack-images-v2.1-json-patch'
# Nova's compute polls Cinder this often before it thaws a guest frozen for volume snapshots: the module
# polls as often, so the window it reports ends close to the thaw.
NOVA_SNAPSHOT_POLL = 0.5


def is_yes(value):
    """A Glance property or Nova flag that says yes (Glance keeps them as strings)."""
    return str(value).lower() in ('yes', 'true', '1', 'on')


def quiesce_failure(error):
    """True when Nova's createImage of a volume-backed server failed in its quiesce step.

    Nova's API asks the compute to freeze the guest before it creates the Cinder snapshots; that is the
    only call to the compute in this request (the thaw is sent without waiting). A guest agent that does
    not answer leaves libvirt's freeze waiting: the call times out (HTTP 500, MessagingTimeout), or a
    later freeze finds libvirt still busy with the first and the compute's error comes back (HTTP 500,
    an exception class ending in _Remote). An agent Nova cannot use is refused in words that name it.
    """
    text = ('%s %s' % (error.details.get('service_message') or '', error.msg)).lower()
    return any(word in text for word in ('messagingtimeout', '_remote', 'quiesc', 'guest agent'))


def _nova_reason(error):
    """Nova's words, without the boilerplate of its unexpected-error answer."""
    text = error.details.get('service_message') or error.msg
    if 'MessagingTimeout' in text:
        return "HTTP %s, MessagingTimeout: Nova's call to the compute timed out" % error.http_status
    remote = re.findall(r"([A-Za-z]+)_Remote", text)     # <class 'nova.exception_Remote.InternalError_Remote'>
    if remote:
        return "HTTP %s, %s: the compute's freeze failed" % (error.http_status, remote[-1])
    return 'HTTP %s: %s' % (error.http_status, (text.strip().splitlines() or [''])[0][:80])


def quiesce_window(sent_at, captured_at):
    """Seconds from sending createImage until every Cinder snapshot was seen available.

    Nova freezes the guest after the request arrives and thaws it once its compute, asked after
    createImage has its snapshots, has seen them leave 'creating' itself (it polls every
    NOVA_SNAPSHOT_POLL s, as the module does): the freeze starts within this window and ends shortly
    after it, by about one poll and the thaw call. An estimate, not a bound.
    """
    return round(max(0.0, captured_at - sent_at), 3)


def _json(text, default):
    if not text:
        return default
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return default


class OpenStackSnapshots(SnapshotDriver):
    """instance_snapshot's driver for the OpenStack backend (see snapshot.py for the verbs)."""

    def __init__(self, backend):
        self.backend = backend
        self.model = backend.model
        self.conn = backend.conn

    def close(self):
        """The backend owns the connection."""

    def location(self):
        return self.backend.location()

    def request_count(self):
        return self.backend.request_count()

    def find_instance(self, identifier):
        return self.backend.find(identifier)

    def observe(self, ref):
        return self.backend.observe(ref)

    # Raw API helpers ---------------------------------------------------------------------------

    def _glance(self, method, path, **kwargs):
        return self.backend.requests.call('image', method, path, **kwargs)

    def _cinder(self, method, path, **kwargs):
        return self.backend.requests.call('block_storage', method, path, microversion=CINDER_MICROVERSION, **kwargs)

    def _image(self, image_id):
        try:
            return self._glance('GET', '/images/%s' % image_id).json()
        except ResourceNotFound:
            return None

    def _images(self, **filters):
        images, url, params = [], '/images', dict(filters, limit=200)
        while url:
            body = self._glance('GET', url, params=params).json()
            images.extend(body.get('images', []))
            url, params = body.get('next'), None
            if url and url.startswith('/v2'):
                url = url[len('/v2'):]
        return images

    def _set_properties(self, image, properties):
        patch = []
        for key, value in sorted(properties.items()):
            patch.append({'op': 'replace' if key in image else 'add', 'path': '/%s' % key, 'value': value})

        def applied():
            now = self._image(image['id']) or {}
            return all(now.get(key) == value for key, value in properties.items())
        try:
            response = self._glance('PATCH', '/images/%s' % image['id'], json=patch,
                                    headers={'Content-Type': JSON_PATCH}, verify=applied)
        except RequestFailed as error:
            error.msg = 'Glance refused to update image %s: %s' % (image['id'], error.msg)
            raise
        return response.json() if response is not None else self._image(image['id'])

    def _server(self, ref):
        return self.backend.nova('GET', '/servers/%s' % ref).json()['server']

    def _attachments(self, ref):
        body = self.backend.nova('GET', '/servers/%s/os-volume_attachments' % ref).json()
        return [(item.get('device'), item['volumeId']) for item in body.get('volumeAttachments', [])]

    def _volume(self, volume_id):
        return self._cinder('GET', '/volumes/%s' % volume_id).json()['volume']

    def _snapshot_of_volume(self, snapshot_id):
        try:
            return self._cinder('GET', '/snapshots/%s' % snapshot_id).json()['snapshot']
        except ResourceNotFound:
            return None

    # Reading ---------------------------------------------------------------------------------

    def _owner(self, image):
        return image.get('vmops_instance_id') or image.get('instance_uuid')

    def _belongs(self, image, ref, identifier):
        owner = self._owner(image)
        if ref is not None:
            return owner == ref
        return identifier in (owner, image.get('vmops_instance_name'))

    def _complete(self, image):
        if image.get('status') != 'active':
            return False
        if 'vmops_instance_id' in image:
            return image.get('vmops_complete') == 'true'
        return True     # a snapshot Nova made for someone else: active is all there is to check

    def _named(self, ref, identifier, name):
        images = [image for image in self._images(name=name) if image.get('name') == name]
        mine = [image for image in images if self._belongs(image, ref, identifier)]
        if images and not mine:
            owners = sorted(set(str(self._owner(image)) for image in images))
            raise InvalidRequest('Snapshot name %s is taken by a snapshot of another server (%s); choose another '
                                 'name.' % (name, ', '.join(owners)), owners=owners)
        return mine

    def get(self, ref, identifier, name):
        complete = [image for image in self._named(ref, identifier, name) if self._complete(image)]
        busy = [image for image in self._named(ref, identifier, name)
                if 'vmops_instance_id' not in image and image.get('status') in ('queued', 'saving', 'importing')]
        if busy and not complete:
            raise InvalidRequest('Snapshot %s of this server is being taken by someone else (image %s is %s); '
                                 'try again later.' % (name, busy[0]['id'], busy[0]['status']))
        complete.sort(key=lambda image: image.get('created_at') or '')
        return self._record(complete[-1]) if complete else None

    def incomplete(self, ref, identifier, name):
        return [self._record(image) for image in self._named(ref, identifier, name)
                if 'vmops_instance_id' in image and not self._complete(image)]

    def series(self, ref, identifier, series):
        filters = {'vmops_series': series}
        if ref is not None:
            filters['vmops_instance_id'] = ref
        elif _looks_like_uuid(identifier):
            filters['vmops_instance_id'] = identifier
        else:
            filters['vmops_instance_name'] = identifier
        return [self._record(image) for image in self._images(**filters)
                if image.get('vmops_series') == series and self._complete(image)]

    def _record(self, image):
        bdm = _json(image.get('block_device_mapping'), [])
        extra = _json(image.get('vmops_volume_snapshots'), [])
        kind = image.get('vmops_kind') or ('volume_backed' if bdm else 'image')
        contains = []
        if kind == 'image' or image.get('size'):
            contains.append({'device': image.get('root_device_name') or 'vda', 'kind': 'image',
                             'id_or_path': image['id'], 'size_bytes': image.get('size')})
        for item in bdm:
            if item.get('snapshot_id'):
                contains.append({'device': item.get('device_name'), 'kind': 'volume_snapshot',
                                 'id_or_path': item['snapshot_id'],
                                 'size_bytes': (item.get('volume_size') or 0) * GIB or None})
        for item in extra:
            contains.append({'device': item.get('device'), 'kind': 'volume_snapshot', 'id_or_path': item['snapshot_id'],
                             'volume_id': item.get('volume_id'), 'size_bytes': (item.get('size_gb') or 0) * GIB or None})
        paused = image.get('vmops_guest_paused_seconds')
        return {
            'id': image['id'], 'name': image.get('name'), 'series': image.get('vmops_series'), 'backend': 'openstack',
            'kind': kind, 'status': image.get('status'),
            'size_bytes': sum(item.get('size_bytes') or 0 for item in contains),
            'created_at': image.get('vmops_created_at') or image.get('created_at'),
            'quiesced': is_yes(image.get('vmops_quiesced')), 'consistency': image.get('vmops_consistency'),
            'quiesce_error': image.get('vmops_quiesce_error') or None,
            'guest_paused_seconds': float(paused) if paused else None,
            'contains': contains, 'recorded': _json(image.get('vmops_recorded'), {}),
            '_snapshot_ids': [item['id_or_path'] for item in contains if item['kind'] == 'volume_snapshot'],
            '_ours': 'vmops_instance_id' in image, '_image': image,
        }

    # Planning --------------------------------------------------------------------------------

    def plan(self, ref, request):
        server = self._server(ref)
        observation = self.observe(ref)
        if observation.task:
            raise InvalidRequest('Server %s is busy (%s); try again when it has settled.'
                                 % (server['name'], observation.task))
        volume_backed = not server.get('image')
        attachments = self._attachments(ref)
        if observation.state not in (states.RUNNING, states.STOPPED, states.PAUSED, states.SUSPENDED) and not (
                volume_backed and observation.state in (states.SHELVED, states.SHELVED_OFFLOADED)):
            raise InvalidRequest('Server %s is %s: Nova snapshots running, stopped, paused or suspended servers.'
                                 % (server['name'], observation.state))
        image_props = self._source_image_properties(server, attachments, volume_backed)
        nova_quiesces = is_yes(image_props.get('hw_qemu_guest_agent')) and is_yes(image_props.get('os_require_quiesce'))
        data_volumes = [] if volume_backed else attachments
        with_volumes = bool(request.include_volumes and data_volumes)
        if request.quiesce == 'required':
            if with_volumes:
                raise InvalidRequest('quiesce=required with include_volumes: the server is paused for a consistent set '
                                     'and a paused guest cannot be quiesced. Use quiesce=auto (the set is then '
                                     'crash-consistent, taken while paused).')
            if not nova_quiesces and observation.state == states.RUNNING:
                raise InvalidRequest('quiesce=required, but Nova quiesces only servers whose image has '
                                     'hw_qemu_guest_agent=yes and os_require_quiesce=yes; %s has not.' % server['name'])
        if observation.state == states.STOPPED:
            consistency = 'stopped'
        elif with_volumes or observation.state in (states.PAUSED, states.SUSPENDED):
            consistency = 'paused'
        elif nova_quiesces and request.quiesce != 'off':
            consistency = 'quiesced'
        else:
            consistency = 'crash'
        contains = []
        if volume_backed:
            for device, volume_id in attachments:
                contains.append({'device': device, 'kind': 'volume_snapshot', 'id_or_path': None,
                                 'volume_id': volume_id, 'size_bytes': None})
        else:
            contains.append({'device': server.get('OS-EXT-SRV-ATTR:root_device_name') or 'vda', 'kind': 'image',
                             'id_or_path': None, 'size_bytes': None})
            if with_volumes:
                for device, volume_id in data_volumes:
                    contains.append({'device': device, 'kind': 'volume_snapshot', 'id_or_path': None,
                                     'volume_id': volume_id, 'size_bytes': None})
        return {'kind': 'volume_backed' if volume_backed else 'image', 'quiesced': consistency == 'quiesced',
                'consistency': consistency, 'contains': contains, 'pause': with_volumes and observation.state == states.RUNNING,
                'data_volumes': data_volumes if with_volumes else [], '_server': server}

    def _source_image_properties(self, server, attachments, volume_backed):
        if not volume_backed:
            image = self._image((server.get('image') or {}).get('id'))
            return image or {}
        for _device, volume_id in attachments:
            volume = self._volume(volume_id)
            if volume.get('bootable') == 'true' and volume.get('volume_image_metadata'):
                return volume['volume_image_metadata']
        return {}

    # Creating --------------------------------------------------------------------------------

    def create(self, ref, request, name, deadline):
        started = time.monotonic()
        plan = self.plan(ref, request)
        server = plan.pop('_server')
        recorded = self._recorded(server, plan)
        properties = dict((str(key), str(value)) for key, value in (request.metadata or {}).items())
        properties.update({
            'vmops_instance_id': ref, 'vmops_instance_name': server.get('name') or '',
            'vmops_series': request.series or '', 'vmops_created_at': iso_utc(now_utc()), 'vmops_kind': plan['kind'],
            # Nova copies the server's image properties into the snapshot: a server launched from one of our
            # snapshots would pass vmops_complete=true on, before anything is verified.
            'vmops_complete': 'false', 'vmops_volume_snapshots': '[]', 'vmops_recorded': '{}', 'vmops_quiesce_error': '',
        })
        if not request.series:
            properties.pop('vmops_series')
        paused_at = unpaused_at = None
        volume_snapshots = []
        image_id = None
        try:
            if plan['pause']:
                paused_at = time.monotonic()
                self._set_paused(ref, True, deadline)
            sent_at = time.monotonic()
            try:
                image_id = self._create_image(ref, name, properties)
            except RequestFailed as error:
                if not (plan['quiesced'] and plan['kind'] == 'volume_backed' and quiesce_failure(error)):
                    raise
                quiesce_error, removed = self._quiesce_failed(ref, name, server, plan, error, time.monotonic() - sent_at)
                if request.quiesce == 'required':
                    raise RequestFailed('quiesce=required: Nova could not freeze the file systems of server %s: %s. %s '
                                        'Nova left the server %s. Use quiesce=auto for a crash-consistent snapshot instead.'
                                        % (server.get('name'), quiesce_error, removed, describe(self.observe(ref))),
                                        **dict(error.details, quiesce='failed'))
                # Nova quiesces only an active server: paused, its volumes are snapshotted as they are, at one point.
                plan.update(quiesced=False, consistency='paused')
                properties['vmops_quiesce_error'] = quiesce_error
                paused_at = time.monotonic()
                self._set_paused(ref, True, deadline)
                image_id = self._create_image(ref, name, properties)
            for device, volume_id in plan['data_volumes']:
                volume_snapshots.append(self._create_volume_snapshot(volume_id, device, name, ref, image_id))
            if plan['data_volumes']:
                # Recorded at once, so a run that fails later leaves nothing it cannot find again.
                self._set_properties(self._image(image_id) or {'id': image_id},
                                     {'vmops_volume_snapshots': json.dumps(volume_snapshots, sort_keys=True)})
                # The system disk is captured once Nova's task reaches the upload; the volume snapshots once
                # Cinder reports them available. Only then may the guest write again.
                self._wait_captured(ref, deadline)
                for item in volume_snapshots:
                    self._wait_snapshot(item['snapshot_id'], deadline)
        except Exception:
            self._cleanup(image_id, volume_snapshots, ref, paused_at)
            raise
        finally:
            if paused_at is not None:
                unpaused_at = self._unpause_quietly(ref, deadline)
        try:
            image = self._wait_image(image_id, deadline)
            for snapshot_id in [item.get('snapshot_id') for item in _json(image.get('block_device_mapping'), [])]:
                if snapshot_id:
                    self._wait_snapshot(snapshot_id, deadline,
                                        max_interval=NOVA_SNAPSHOT_POLL if plan['quiesced'] else 2.0)
            # Nova reports no freeze times: the module reports what it saw (see quiesce_window).
            window = quiesce_window(sent_at, time.monotonic()) if plan['quiesced'] and plan['kind'] == 'volume_backed' else None
            paused = round(unpaused_at - paused_at, 3) if paused_at is not None else 0.0
            image = self._set_properties(image, {
                'vmops_volume_snapshots': json.dumps(volume_snapshots, sort_keys=True),
                'vmops_recorded': json.dumps(recorded, sort_keys=True),
                'vmops_quiesced': 'true' if plan['quiesced'] else 'false',
                'vmops_consistency': plan['consistency'], 'vmops_guest_paused_seconds': '%.3f' % paused,
            })
            # Last: from now on the snapshot counts (for retention, restore and idempotence).
            image = self._set_properties(image, {'vmops_complete': 'true'})
        except Exception:
            self._cleanup(image_id, volume_snapshots, ref, None)
            raise
        record = self._record(image)
        timings = {'guest_paused_seconds': paused, 'snapshot_seconds': round(time.monotonic() - started, 3)}
        if window is not None:
            timings['quiesce_window_seconds'] = window
        return record, timings

    def _quiesce_failed(self, ref, name, server, plan, error, waited):
        """(why Nova could not quiesce, in at most 255 characters as Nova's metadata wants, and what it left
        behind that was removed here)."""
        volume_ids = set(item['volume_id'] for item in plan['contains'] if item.get('volume_id'))
        removed = []
        # Nova names its volume snapshots after the image; it makes them only after the freeze, but a
        # failure between the two would leave them behind.
        label = 'snapshot for %s' % name
        listed = self._cinder('GET', '/snapshots/detail', params={'name': label}).json().get('snapshots', [])
        for snapshot in listed:
            if snapshot.get('name') == label and snapshot.get('volume_id') in volume_ids:
                self._delete_volume_snapshot(snapshot['id'], quiet=True)
                removed.append('volume snapshot %s' % snapshot['id'])
        for image in self._images(name=name):
            if image.get('name') == name and self._owner(image) == ref and not self._complete(image):
                self.delete_image(image['id'])
                removed.append('image %s' % image['id'])
        host = server.get('OS-EXT-SRV-ATTR:host') or 'its host'
        domain = server.get('OS-EXT-SRV-ATTR:instance_name') or 'the domain'
        # libvirt waits for the agent without a time limit and keeps the freeze; Nova's thaw gives up.
        reason = ('the guest agent did not answer (%s, after %.0f s); libvirt on %s may still hold the freeze: '
                  'should the guest freeze later, run virsh domfsthaw %s there' % (_nova_reason(error), waited, host, domain))
        return reason[:255], ('Removed what Nova had made: %s.' % ', '.join(removed)) if removed else 'Nova made nothing.'

    def _recorded(self, server, plan):
        volumes = []
        for item in plan['contains']:
            if item.get('volume_id'):
                volumes.append({'device': item['device'], 'volume_id': item['volume_id']})
        return {'instance_id': server['id'], 'instance_name': server.get('name'),
                'flavor': (server.get('flavor') or {}).get('original_name'),
                'networks': sorted((server.get('addresses') or {}).keys()),
                'metadata': dict(server.get('metadata') or {}), 'key_name': server.get('key_name'),
                'boot': 'volume' if plan['kind'] == 'volume_backed' else 'image',
                'image_id': (server.get('image') or {}).get('id') if server.get('image') else None,
                'availability_zone': server.get('OS-EXT-AZ:availability_zone'), 'volumes': volumes}

    def _create_image(self, ref, name, properties):
        # Not resent when it may have reached Nova: the image it would have made is found by name and
        # removed as incomplete by the next run.
        try:
            response = self.backend.nova('POST', '/servers/%s/action' % ref,
                                         json={'createImage': {'name': name, 'metadata': properties}})
        except RequestFailed as error:
            error.msg = 'Nova refused createImage of server %s: %s' % (ref, error.msg)
            raise
        return response.json()['image_id']

    def _create_volume_snapshot(self, volume_id, device, name, ref, image_id):
        volume = self._volume(volume_id)
        body = {'snapshot': {'volume_id': volume_id, 'force': True, 'name': '%s-%s' % (name, (device or volume_id).split('/')[-1]),
                             'description': 'vmops.lifecycle instance_snapshot %s of server %s' % (name, ref),
                             'metadata': {'vmops_image_id': image_id, 'vmops_instance_id': ref}}}
        try:
            snapshot = self._cinder('POST', '/snapshots', json=body).json()['snapshot']
        except RequestFailed as error:
            error.msg = 'Cinder refused to snapshot volume %s: %s' % (volume_id, error.msg)
            raise
        return {'device': device, 'volume_id': volume_id, 'snapshot_id': snapshot['id'], 'size_gb': volume.get('size')}

    def _set_paused(self, ref, paused, deadline):
        self.backend.perform(ref, 'pause' if paused else 'unpause')
        wanted = states.PAUSED if paused else states.RUNNING
        wait_until(lambda: self.observe(ref), lambda o: o.state == wanted and not o.task, describe,
                   'server %s to be %s' % (ref, wanted), deadline,
                   failure=lambda o: o.fault if o.state == states.ERROR else None)

    def _unpause_quietly(self, ref, deadline):
        # Nova refuses to unpause while its snapshot task runs (the upload included): wait for it.
        # The server must not stay paused because the run's own time ran out: a deadline of its own.
        deadline = Deadline(max(120.0, deadline.remaining()))
        try:
            wait_until(lambda: self.observe(ref), lambda o: not o.task or o.state == states.ERROR, describe,
                       'Nova to finish the snapshot task of server %s' % ref, deadline)
            self._set_paused(ref, False, deadline)
        finally:
            unpaused_at = time.monotonic()
        return unpaused_at

    def _wait_captured(self, ref, deadline):
        def task(observation):
            return observation.details.get('task_state')
        wait_until(lambda: self.observe(ref), lambda o: task(o) not in CAPTURING,
                   lambda o: '%s (task %s)' % (describe(o), task(o)),
                   'Nova to capture the disk of server %s' % ref, deadline,
                   failure=lambda o: o.fault if o.state == states.ERROR else None)

    def _wait_image(self, image_id, deadline):
        return wait_until(lambda: self._image(image_id) or {'status': 'deleted'},
                          lambda image: image.get('status') == 'active',
                          lambda image: image.get('status'), 'snapshot image %s to be active' % image_id, deadline,
                          failure=lambda image: ('the image is %s' % image.get('status'))
                          if image.get('status') in IMAGE_FAILED else None)

    def _wait_snapshot(self, snapshot_id, deadline, max_interval=2.0):
        return wait_until(lambda: self._snapshot_of_volume(snapshot_id) or {'status': 'deleted'},
                          lambda snapshot: snapshot.get('status') == 'available',
                          lambda snapshot: snapshot.get('status'), 'volume snapshot %s to be available' % snapshot_id,
                          deadline, failure=lambda snapshot: ('the volume snapshot is %s' % snapshot.get('status'))
                          if snapshot.get('status') in SNAPSHOT_FAILED + ('deleted',) else None,
                          max_interval=max_interval)

    def _cleanup(self, image_id, volume_snapshots, ref, paused_at):
        """Best effort after a failure: remove what this run created (it never counted)."""
        for item in volume_snapshots:
            self._delete_volume_snapshot(item['snapshot_id'], quiet=True)
        if image_id:
            image = self._image(image_id)
            if image:
                for item in _json(image.get('block_device_mapping'), []):
                    if item.get('snapshot_id'):
                        self._delete_volume_snapshot(item['snapshot_id'], quiet=True)
            try:
                self._glance('DELETE', '/images/%s' % image_id, verify=lambda: self._image_gone(image_id))
            except Exception:  # pylint: disable=broad-except
                pass    # the image stays marked vmops_complete=false: never used, removed on the next run

    # Deleting --------------------------------------------------------------------------------

    def _delete_volume_snapshot(self, snapshot_id, quiet=False):
        def deleting():
            now = self._snapshot_of_volume(snapshot_id)
            return now is None or now.get('status') in ('deleting', 'deleted')
        try:
            self._cinder('DELETE', '/snapshots/%s' % snapshot_id, verify=deleting)
        except ResourceNotFound:
            pass
        except Exception:  # pylint: disable=broad-except
            if not quiet:
                raise

    def _tagged_volume_snapshots(self, image_id):
        params = {'metadata': json.dumps({'vmops_image_id': image_id})}
        return self._cinder('GET', '/snapshots/detail', params=params).json().get('snapshots', [])

    def delete(self, record, deadline):
        image = self._image(record['id'])
        if image is None:
            return
        if record.get('_ours') and image.get('vmops_complete') == 'true':
            # First make it not count, so a run that fails below never leaves a "complete" half snapshot.
            image = self._set_properties(image, {'vmops_complete': 'false'})
        snapshot_ids = self._record(image)['_snapshot_ids']
        # Also the ones tagged with this image that a failed run could not record on it.
        for snapshot in self._tagged_volume_snapshots(record['id']):
            if snapshot['id'] not in snapshot_ids:
                snapshot_ids.append(snapshot['id'])
        for snapshot_id in snapshot_ids:
            self._delete_volume_snapshot(snapshot_id)
        for snapshot_id in snapshot_ids:
            wait_until(lambda: self._snapshot_of_volume(snapshot_id) or {'status': 'gone'},
                       lambda snapshot: snapshot.get('status') == 'gone', lambda snapshot: snapshot.get('status'),
                       'volume snapshot %s to be deleted' % snapshot_id, deadline,
                       failure=lambda snapshot: 'it is error_deleting' if snapshot.get('status') == 'error_deleting' else None)
        self.delete_image(record['id'])

    def delete_image(self, image_id):
        """Delete one Glance image; one already gone is no error (instance_backup deletes its points' images too)."""
        try:
            self._glance('DELETE', '/images/%s' % image_id, verify=lambda: self._image_gone(image_id))
        except ResourceNotFound:
            pass
        except RequestFailed as error:
            error.msg = 'Glance refused to delete image %s: %s' % (image_id, error.msg)
            raise

    def _image_gone(self, image_id):
        image = self._image(image_id)
        return image is None or image.get('status') in ('deleted', 'pending_delete')
