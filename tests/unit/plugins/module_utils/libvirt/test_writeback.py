# -*- coding: utf-8 -*-
"""writeback.py: the hypervisor's dirty-page writeback threshold, read from a /proc laid out by the test."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt import writeback

MIB = 1024 * 1024


def fake_proc(tmp_path, fixed=0, ratio=10, available_kib=20 * 1024 * 1024):
    (tmp_path / 'sys' / 'vm').mkdir(parents=True)
    (tmp_path / 'sys' / 'vm' / 'dirty_background_bytes').write_text('%d\n' % fixed)
    (tmp_path / 'sys' / 'vm' / 'dirty_background_ratio').write_text('%d\n' % ratio)
    (tmp_path / 'meminfo').write_text('MemTotal: 24000000 kB\nMemAvailable: %d kB\nCached: 1 kB\n' % available_kib)
    return str(tmp_path)


@pytest.mark.parametrize('uri, local', [
    ('qemu:///system', True),
    ('qemu+unix:///system?socket=/var/tmp/h1/libvirt-sock', True),
    ('qemu+tcp://localhost/system', True),
    ('qemu+ssh://root@127.0.0.1:2222/system', True),
    ('qemu+ssh://root@hv2.example.net/system', False),
    ('qemu+tcp://10.0.0.4/system', False),
    ('qemu+tcp://[fd00::4]:16509/system', False),
    ('', False),
    (None, False),
])
def test_only_a_libvirtd_on_this_machine_counts_as_local(uri, local):
    assert writeback.is_local(uri) is local


def test_the_default_ratio_of_available_memory_is_reported_untuned_with_advice(tmp_path):
    report = writeback.local_writeback('qemu:///system', fake_proc(tmp_path))
    assert report['threshold_bytes'] == 2 * 1024 * MIB          # 10 % of 20 GiB
    assert report['setting'] == 'vm.dirty_background_ratio=10 (of 20480 MiB available)'
    assert report['tuned'] is False
    assert 'past 2048 MiB' in report['advice'] and 'vm.dirty_background_bytes=67108864' in report['advice']


def test_a_fixed_byte_threshold_wins_over_the_ratio(tmp_path):
    report = writeback.local_writeback('qemu:///system', fake_proc(tmp_path, fixed=64 * MIB))
    assert report == {'threshold_bytes': 64 * MIB, 'setting': 'vm.dirty_background_bytes=67108864', 'tuned': True,
                      'advice': None}


def test_a_small_ratio_on_a_small_host_counts_as_tuned(tmp_path):
    report = writeback.local_writeback('qemu:///system', fake_proc(tmp_path, ratio=1, available_kib=8 * 1024 * 1024))
    assert report['tuned'] is True and report['threshold_bytes'] == 8 * 1024 * MIB // 100


def test_a_remote_host_or_an_unreadable_proc_gives_none(tmp_path):
    assert writeback.local_writeback('qemu+ssh://root@hv2/system', fake_proc(tmp_path)) is None
    assert writeback.local_writeback('qemu:///system', str(tmp_path / 'nothing')) is None
