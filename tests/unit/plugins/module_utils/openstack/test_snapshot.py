# -*- coding: utf-8 -*-
"""The parts of the OpenStack snapshot driver that read what the cloud returned: how an image
becomes a record, its completeness and its owner; and what it does when Nova cannot quiesce."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import time

import pytest

from ansible_collections.vmops.lifecycle.plugins.module_utils.core.backend import Observation
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import RequestFailed
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.snapshot import SnapshotRequest
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.waiter import Deadline
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


# Quiesce: what Nova's createImage answers when the guest agent does not, and what the driver does then.

MESSAGING_TIMEOUT = ("Unexpected API Error. Please report this at http://bugs.launchpad.net/nova/ and attach the Nova "
                     "API log if possible.\n<class 'oslo_messaging.exceptions.MessagingTimeout'>")


def _refused(service_message, status=500):
    return RequestFailed('Compute (Nova) refused POST /servers/srv/action (HTTP %d): %s' % (status, service_message),
                         service='compute', method='POST', path='/servers/srv/action', http_status=status,
                         service_message=service_message, attempts=1, sent='yes')


def test_quiesce_failure_is_told_from_other_refusals():
    assert openstack_snapshot.quiesce_failure(_refused(MESSAGING_TIMEOUT))
    assert openstack_snapshot.quiesce_failure(_refused(
        'Error from libvirt while quiescing instance-00000002: [Error Code 68] Timed out during operation: cannot '
        'acquire state change lock (held by agent=remoteDispatchDomainFSFreeze)'))
    assert openstack_snapshot.quiesce_failure(_refused('QEMU guest agent is not enabled', 400))
    # The compute's own error, when libvirt gave up waiting for a freeze still held for the agent.
    remote = _refused("Unexpected API Error. Please report this at http://bugs.launchpad.net/nova/ and attach the "
                      "Nova API log if possible.\n<class 'nova.exception_Remote.InternalError_Remote'>")
    assert openstack_snapshot.quiesce_failure(remote)
    assert openstack_snapshot._nova_reason(remote) == "HTTP 500, InternalError: the compute's freeze failed"
    assert not openstack_snapshot.quiesce_failure(_refused('Maximum number of snapshots exceeded', 403))
    assert not openstack_snapshot.quiesce_failure(_refused("Cannot 'createImage' instance srv while it is in "
                                                           "task_state pausing", 409))


def test_quiesce_window_is_from_request_to_last_snapshot_seen():
    assert openstack_snapshot.quiesce_window(10.0, 11.2344) == 1.234
    assert openstack_snapshot.quiesce_window(10.0, 9.0) == 0.0


def test_quiesce_error_is_read_back_and_empty_means_none():
    base = {'id': 'img', 'name': 's', 'status': 'active', 'size': 0, 'vmops_instance_id': 'srv'}
    assert driver()._record(dict(base, vmops_quiesce_error=''))['quiesce_error'] is None
    assert driver()._record(dict(base, vmops_quiesce_error='no agent'))['quiesce_error'] == 'no agent'


class _QuiesceDriver(openstack_snapshot.OpenStackSnapshots):
    """Nova and Cinder replaced by a script: createImage fails like a stuck agent while the server runs."""

    def __init__(self, agent_answers):
        super(_QuiesceDriver, self).__init__(_Backend())
        self.agent_answers = agent_answers
        self.calls = []
        self.paused = False
        self.images = {}

    def plan(self, ref, request):
        return {'kind': 'volume_backed', 'quiesced': True, 'consistency': 'quiesced', 'pause': False, 'data_volumes': [],
                'contains': [{'device': '/dev/vda', 'kind': 'volume_snapshot', 'id_or_path': None, 'volume_id': 'v1'}],
                '_server': {'id': ref, 'name': 'web1', 'OS-EXT-SRV-ATTR:host': 'kvm1',
                            'OS-EXT-SRV-ATTR:instance_name': 'instance-00000002'}}

    def _create_image(self, ref, name, properties):
        self.calls.append(('createImage', 'paused' if self.paused else 'running'))
        if not self.paused and not self.agent_answers:
            raise _refused(MESSAGING_TIMEOUT)
        bdm = json.dumps([{'device_name': '/dev/vda', 'snapshot_id': 'snap-1', 'volume_size': 1, 'boot_index': 0}])
        self.images['img'] = dict(properties, id='img', name=name, status='active', size=0, block_device_mapping=bdm)
        return 'img'

    def _set_paused(self, ref, paused, deadline):
        self.calls.append(('pause' if paused else 'unpause', None))
        self.paused = paused

    def _unpause_quietly(self, ref, deadline):
        self._set_paused(ref, False, deadline)
        return time.monotonic()

    def _cinder(self, method, path, **kwargs):
        self.calls.append(('cinder', method, path))
        return _Json({'snapshots': []})

    def _images(self, **filters):
        return []

    def observe(self, ref):
        return Observation('web1', ref, 'running', None, None, {})

    def _wait_image(self, image_id, deadline):
        return self.images[image_id]

    def _wait_snapshot(self, snapshot_id, deadline, max_interval=2.0):
        self.calls.append(('wait_snapshot', max_interval))

    def _set_properties(self, image, properties):
        image.update(properties)
        return image


class _Json(object):
    def __init__(self, body):
        self.body = body

    def json(self):
        return self.body


def _request(quiesce):
    return SnapshotRequest(instance='web1', state='present', name='s1', series=None, retention=None,
                           include_volumes=False, quiesce=quiesce, metadata={}, backup_dir=None, wait=True, timeout=60)


def test_quiesced_snapshot_reports_the_window_and_polls_like_nova():
    d = _QuiesceDriver(agent_answers=True)
    record, timings = d.create('srv', _request('required'), 's1', Deadline(60))
    assert record['quiesced'] and record['consistency'] == 'quiesced' and record['quiesce_error'] is None
    assert 0 <= timings['quiesce_window_seconds'] < 5
    assert ('wait_snapshot', openstack_snapshot.NOVA_SNAPSHOT_POLL) in d.calls
    assert ('pause', None) not in d.calls


def test_required_fails_clearly_when_the_agent_does_not_answer():
    d = _QuiesceDriver(agent_answers=False)
    with pytest.raises(RequestFailed) as failure:
        d.create('srv', _request('required'), 's1', Deadline(60))
    message = failure.value.msg
    assert message.startswith('quiesce=required: Nova could not freeze the file systems of server web1')
    assert "HTTP 500, MessagingTimeout: Nova's call to the compute timed out" in message
    assert 'Nova made nothing.' in message and 'left the server running' in message
    assert 'libvirt on kvm1 may still hold the freeze' in message and 'virsh domfsthaw instance-00000002 there' in message
    assert failure.value.details['quiesce'] == 'failed'
    # Nothing else was tried: no pause, no second createImage.
    assert [call for call in d.calls if call[0] in ('createImage', 'pause')] == [('createImage', 'running')]
    assert ('cinder', 'GET', '/snapshots/detail') in d.calls    # Nova's leftovers were looked for
    assert d.images == {}


def test_auto_falls_back_to_a_paused_crash_consistent_snapshot_that_says_so():
    d = _QuiesceDriver(agent_answers=False)
    record, timings = d.create('srv', _request('auto'), 's1', Deadline(60))
    assert [call for call in d.calls if call[0] in ('createImage', 'pause', 'unpause')] == [
        ('createImage', 'running'), ('pause', None), ('createImage', 'paused'), ('unpause', None)]
    assert record['quiesced'] is False and record['consistency'] == 'paused'
    assert record['quiesce_error'].startswith('the guest agent did not answer (HTTP 500, MessagingTimeout')
    assert len(record['quiesce_error']) <= 255     # Nova refuses longer metadata values
    assert d.images['img']['vmops_quiesce_error'] == record['quiesce_error']
    assert 'quiesce_window_seconds' not in timings and timings['guest_paused_seconds'] >= 0


def test_other_createimage_refusals_are_not_taken_for_a_quiesce_failure():
    d = _QuiesceDriver(agent_answers=True)

    def refuse(ref, name, properties):
        raise _refused('Maximum number of snapshots exceeded', 403)
    d._create_image = refuse
    with pytest.raises(RequestFailed) as failure:
        d.create('srv', _request('auto'), 's1', Deadline(60))
    assert 'Maximum number of snapshots' in failure.value.msg
    assert ('pause', None) not in d.calls
