# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore on OpenStack: rebuild a server from a snapshot image, or relaunch a lost one from it.

A rebuild keeps the server's ID, ports, key pair and metadata (the metadata is sent back with
the marker vmops_restored_from added, which makes the restore idempotent).  Snapshots are found
with instance_snapshot's driver (openstack_snapshot.py), so both modules agree on what a
verified snapshot of a series is.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import launch
from ansible_collections.vmops.lifecycle.plugins.module_utils.core import states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InvalidRequest
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.backend import (
    _looks_like_uuid, observation_from_server)
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.rescue import is_volume_backed
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack.snapshot import OpenStackSnapshots
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.restore import (
    RESTORED_FROM_KEY, InstanceStatus, Restorer)
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.snapshot import newest_in_series
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import wait_until

REBUILDABLE = (states.RUNNING, states.STOPPED, states.ERROR)
# Set on a relaunched server: the ID of the server it replaces, so that the snapshots of that one
# (a series, say) still count as its own.
LINEAGE_KEY = 'vmops_relaunched_from'


class OpenStackRestorer(Restorer):

    def __init__(self, backend):
        self.backend = backend
        self.snapshots = OpenStackSnapshots(backend)

    def _server(self, server_id):
        return self.backend.nova('GET', '/servers/%s' % server_id).json()['server']

    def _volume_backed(self, body):
        image_id = (body.get('image') or {}).get('id') if isinstance(body.get('image'), dict) else None
        cache = self.__dict__.setdefault('_volume_backed_cache', {})
        if image_id not in cache:       # the waits poll status(): one image read per image, not per poll
            cache[image_id] = is_volume_backed(self.backend.requests, body)
        return cache[image_id]

    def status(self, server_id):
        body = self._server(server_id)
        observation = observation_from_server(body)
        metadata = dict(body.get('metadata') or {})
        details = dict(observation.details)
        details.update(volume_backed=self._volume_backed(body), metadata=metadata, key_name=body.get('key_name'),
                       image=(body.get('image') or {}).get('id') if body.get('image') else None,
                       task=observation.task, fault=observation.fault, lineage=metadata.get(LINEAGE_KEY))
        return InstanceStatus(observation.name, observation.id, observation.state, metadata.get(RESTORED_FROM_KEY),
                              details.get('locked'), details.get('locked_reason'), details)

    # The snapshot --------------------------------------------------------------------------

    def snapshot(self, ref, request):
        if request.series:
            record = newest_in_series(self.snapshots, ref, request.identifier, request.series)
            lineage = self.status(ref).details.get('lineage') if ref is not None else None
            if record is None and lineage:
                record = newest_in_series(self.snapshots, lineage, request.identifier, request.series)
            if record is None:
                raise InvalidRequest('Series %s has no verified snapshot of %s (complete and active); nothing was '
                                     'changed.' % (request.series, request.identifier), series=request.series)
            return record
        images = self._images_named(request.snapshot)
        if not images:
            raise InvalidRequest('No snapshot %s in %s; nothing was changed.' % (request.snapshot, self.backend.location()))
        if len(images) > 1:
            mine = [image for image in images if ref is not None and _owner(image) == ref]
            if len(mine) != 1:
                raise InvalidRequest('%d images are named %s: %s. Name the snapshot by its ID.'
                                     % (len(images), request.snapshot, ', '.join(sorted(i['id'] for i in images))))
            images = mine
        image = images[0]
        if image.get('image_type') != 'snapshot' and 'vmops_instance_id' not in image:
            raise InvalidRequest('Image %s is not a snapshot of a server; nothing was changed.' % request.snapshot)
        if not self.snapshots._complete(image):
            raise InvalidRequest('Snapshot %s is not verified (status %s%s); nothing was changed.'
                                 % (request.snapshot, image.get('status'),
                                    ', not marked complete' if 'vmops_instance_id' in image else ''))
        return self.snapshots._record(image)

    def _images_named(self, identifier):
        if _looks_like_uuid(identifier):
            image = self.snapshots._image(identifier)
            if image is not None:
                return [image]
        return [image for image in self.snapshots._images(name=identifier) if image.get('name') == identifier]

    def owner(self, record):
        return _owner(record['_image'])

    # Rebuild -------------------------------------------------------------------------------

    def plan_restore(self, ref, before, record, request):
        if before.state not in REBUILDABLE:
            raise InvalidRequest('%s is %s; Nova rebuilds only running, stopped or errored servers. Bring it to '
                                 'running or stopped first (vmops.lifecycle.instance_state); nothing was changed.'
                                 % (before.name, before.state), state=before.state)
        if before.details.get('volume_backed'):
            raise InvalidRequest('%s is volume-backed; Nova cannot rebuild it from a snapshot image (its snapshot is '
                                 'a set of Cinder volume snapshots). Delete it and relaunch it from the snapshot '
                                 '(relaunch_missing=true); nothing was changed.' % before.name)
        if record['kind'] != 'image':
            raise InvalidRequest('Snapshot %s is of a volume-backed server (%s); an image-booted server cannot be '
                                 'rebuilt from it. Nothing was changed.' % (record['name'], record['kind']))
        metadata = dict(before.details.get('metadata') or {})
        metadata[RESTORED_FROM_KEY] = record['id']
        body = {'rebuild': {'imageRef': record['id'], 'metadata': metadata}}
        power = self.plan_power(ref, before._replace(state=_after_rebuild(before.state)), request)
        return {'action': 'rebuild', 'request_body': body, 'power': power['power'],
                'steps': ['rebuild'] + power['steps'], 'state_after': power['state_after']}

    def restore(self, ref, before, record, plan, request, deadline):
        timings = {}
        started = time.monotonic()
        self.backend.server_action(ref, 'rebuild', plan['request_body'], name=before.name)

        def done(status):
            return (not status.details['task'] and status.state in (states.RUNNING, states.STOPPED)
                    and status.details.get('image') == record['id'])

        def failure(status):
            if status.state == states.ERROR:
                return 'the server is in error: %s' % status.details.get('fault')
            return None
        if request.wait or plan['power']:
            wait_until(lambda: self.status(ref), done, _describe, 'server %s to be rebuilt' % before.name, deadline,
                       failure=failure)
        timings['rebuild_seconds'] = round(time.monotonic() - started, 3)
        if plan['power']:
            started = time.monotonic()
            self.set_power(ref, plan['power'], request, deadline)
            timings['power_seconds'] = round(time.monotonic() - started, 3)
        return self.status(ref), timings

    # Relaunch ------------------------------------------------------------------------------

    def plan_relaunch(self, record, request):
        recorded = record.get('recorded') or {}
        name = request.identifier if not _looks_like_uuid(request.identifier) else recorded.get('instance_name')
        if not name:
            raise InvalidRequest('The server is gone and was named by its ID; snapshot %s records no name to '
                                 'relaunch it under. Give the name as instance.' % record['name'])
        if not recorded.get('flavor'):
            raise InvalidRequest('Snapshot %s records no flavor (not taken by instance_snapshot?); launch the '
                                 'server with vmops.lifecycle.instance_launch instead.' % record['name'])
        metadata = dict(recorded.get('metadata') or {})
        metadata[RESTORED_FROM_KEY] = record['id']
        if self.owner(record):
            metadata[LINEAGE_KEY] = self.owner(record)
        launch_request = launch.LaunchRequest(
            # As `image`: launch.py's `snapshot` also wants image_type=snapshot, which Nova does not set on the
            # snapshot of a volume-backed server (a Glance image that lists Cinder snapshots).
            name=name, image=record['id'], snapshot=None, volume=None, boot_volume_size=None,
            delete_volume_on_termination=False, flavor=recorded['flavor'], networks=recorded.get('networks') or [],
            key_name=recorded.get('key_name'), metadata=metadata,
            availability_zone=request.availability_zone or recorded.get('availability_zone'),
            keep_failed=False, wait=True, timeout=request.timeout)
        launch.validate_launch_request(self.backend.model, launch_request)
        body = launch.server_body(self.backend, launch_request)     # resolves flavor and networks: read-only
        wanted = 'stopped' if request.power_state == 'stopped' else 'running'
        return {'action': 'relaunch', 'launch': launch_request, 'request_body': body, 'name': name,
                'power': 'stopped' if wanted == 'stopped' else None,
                'steps': ['launch'] + (['power_stopped'] if wanted == 'stopped' else []), 'state_after': wanted}

    def relaunch(self, record, plan, request, deadline):
        timings = {}
        started = time.monotonic()
        launch_request = plan['launch']._replace(timeout=max(1, int(deadline.remaining())))
        result = launch.ensure_launched(self.backend, launch_request)
        timings['launch_seconds'] = round(time.monotonic() - started, 3)
        server_id = result['instance']['id']
        if plan['power']:
            started = time.monotonic()
            self.set_power(server_id, plan['power'], request, deadline)
            timings['power_seconds'] = round(time.monotonic() - started, 3)
        return self.status(server_id), timings


def _after_rebuild(state):
    """Nova keeps a stopped server stopped through a rebuild; an errored one comes back active."""
    return states.STOPPED if state == states.STOPPED else states.RUNNING


def _owner(image):
    return image.get('vmops_instance_id') or image.get('instance_uuid')


def _describe(status):
    text = status.state
    if status.details.get('task'):
        text += ' (busy: %s)' % status.details['task']
    return text
