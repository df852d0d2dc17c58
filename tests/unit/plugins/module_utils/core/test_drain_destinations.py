# -*- coding: utf-8 -*-
"""host_evacuate's destinations (a target per instance) through the neutral drain core, on the in-memory
cloud of test_moves."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.vmops.lifecycle.plugins.module_utils.core import moves, states
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import InvalidRequest
from ansible_collections.vmops.lifecycle.tests.unit.plugins.module_utils.core.test_moves import FakeCloud, inst, run


def test_each_named_instance_goes_to_its_destination_and_the_others_to_the_scheduler(clock):
    cloud = FakeCloud(clock, [inst('a'), inst('b', states.STOPPED), inst('c')])
    result = run(cloud, clock, destinations={'vm-a': 'dst2', 'b': 'dst2'})
    assert dict((i, cloud.instances[i]['host']) for i in 'abc') == {'a': 'dst2', 'b': 'dst2', 'c': 'dst1'}
    assert dict((s['id'], s['to']) for s in result['servers']) == {'a': 'dst2', 'b': 'dst2', 'c': 'dst1'}
    assert cloud.instances['b']['state'] == states.STOPPED


def test_check_mode_and_diff_show_each_destination(clock):
    cloud = FakeCloud(clock, [inst('a'), inst('c')])
    planned = run(cloud, clock, check_mode=True, destinations={'vm-a': 'dst2'})
    assert planned['diff']['after']['instances']['vm-a (a)']['host'] == 'dst2'
    assert planned['diff']['after']['instances']['vm-c (c)']['host'] == 'chosen by the scheduler'
    assert dict((s['id'], s['to']) for s in planned['servers']) == {'a': 'dst2', 'c': None}
    assert cloud.log == [] and cloud.service['status'] == 'enabled'


def test_a_key_that_is_no_instance_of_the_host_is_refused_before_anything_changes(clock):
    cloud = FakeCloud(clock, [inst('a'), inst('c', host='dst2')])
    cloud.locate = lambda ref: next(({'host': i['host']} for i in cloud.instances.values()
                                     if ref in (i['id'], i['name'])), None)
    for wrong, text in (('nosuch', 'nosuch (no such instance)'), ('vm-c', 'vm-c (it is on dst2)')):
        with pytest.raises(InvalidRequest) as caught:
            run(cloud, clock, destinations={'vm-a': 'dst1', wrong: 'dst1'})
        assert text in caught.value.msg and 'Nothing was changed' in caught.value.msg
    assert cloud.log == [] and cloud.instances['a']['host'] == 'src'


@pytest.mark.parametrize('options, text', [
    (dict(destinations={'vm-a': 'dst1'}, target_host='dst2'), 'destinations and target_host are exclusive'),
    (dict(destinations={'vm-a': 'src'}), 'vm-a -> src'),
    (dict(destinations={'vm-a': ''}), 'vm-a -> '),
    (dict(destinations={'vm-a': 'dst1'}, mode='evacuate', fenced=True), 'mode=drain only'),
])
def test_bad_destinations_refused(clock, options, text):
    cloud = FakeCloud(clock, [inst('a')])
    with pytest.raises(InvalidRequest) as caught:
        run(cloud, clock, **options)
    assert text in caught.value.msg and cloud.log == []


def test_libvirt_refuses_destinations():
    request = moves.MoveRequest(host='qemu+tcp://h1/system', destinations={'vm-a': 'qemu+tcp://h2/system'})
    with pytest.raises(InvalidRequest) as caught:
        moves.validate_request(request, 'libvirt')
    assert 'OpenStack backend only' in caught.value.msg


def test_target_for_by_name_then_id_then_target_host():
    subject = moves.MoveSubject('id-1', 'vm1', states.RUNNING, None, 'src', False, {})
    assert moves.MoveRequest(host='src', destinations={'vm1': 'x'}).target_for(subject) == 'x'
    assert moves.MoveRequest(host='src', destinations={'id-1': 'y'}).target_for(subject) == 'y'
    assert moves.MoveRequest(host='src', target_host='z').target_for(subject) == 'z'
    assert moves.MoveRequest(host='src').target_for(subject) is None
