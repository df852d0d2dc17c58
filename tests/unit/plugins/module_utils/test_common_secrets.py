# -*- coding: utf-8 -*-
"""A `cloud:` given as a dict: its secrets never reach the module's output (invocation.module_args at -vvv)
or its log, while a cloud name given as a string stays readable."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.vmops.lifecycle.plugins.module_utils import common

SECRET = 'S3cr3t-pass-word'


def exit_output(capsys, args):
    logged = []
    with patch_module_args(args):
        module = common.new_module(dict(name=dict(type='str')))
        module.log = lambda msg, log_args=None: logged.append(msg)
        module._log_invocation()
        with pytest.raises(SystemExit):
            module.exit_json(changed=False, echo='the password is %s' % SECRET)
    return capsys.readouterr().out, logged


def test_cloud_dict_password_is_hidden_everywhere(capsys):
    cloud = {'auth': {'auth_url': 'http://keystone:5000/v3', 'username': 'admin', 'password': SECRET,
                      'project_name': 'admin'}, 'region_name': 'RegionOne'}
    out, logged = exit_output(capsys, {'cloud': cloud, 'name': 'x'})
    assert SECRET not in out and SECRET not in ''.join(logged)
    result = json.loads(out)
    assert result['invocation']['module_args']['cloud']['auth']['username'] == 'admin'
    assert result['invocation']['module_args']['cloud']['auth']['password'] != SECRET


def test_application_credential_secret_is_hidden(capsys):
    cloud = {'auth_type': 'v3applicationcredential',
             'auth': {'auth_url': 'http://k', 'application_credential_id': 'abc', 'application_credential_secret': SECRET}}
    out = exit_output(capsys, {'cloud': cloud})[0]
    assert SECRET not in out and 'abc' in out


def test_a_cloud_name_stays_readable(capsys):
    out = exit_output(capsys, {'cloud': 'vmops-admin', 'name': 'x'})[0]
    assert json.loads(out)['invocation']['module_args']['cloud'] == 'vmops-admin'


def test_a_password_in_a_libvirt_uri_is_hidden_everywhere(capsys):
    uri = 'qemu+tcp://vmops:%s@198.51.100.2/system' % SECRET
    out, logged = exit_output(capsys, {'libvirt_uri': uri, 'name': 'x'})
    assert SECRET not in out and SECRET not in ''.join(logged)
    assert 'qemu+tcp://vmops:' in json.loads(out)['invocation']['module_args']['libvirt_uri']
