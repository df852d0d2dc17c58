# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every module of the collection shares: options, backend choice, error reporting.

A module declares only its own options; `module_options()` adds the shared
ones (documented once in the doc fragments of the same names), and
`run_module()` opens the backend, calls the module's function and turns the
collection's errors into `fail_json`.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import os
import sys
import traceback

from importlib import metadata as importlib_metadata

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt import backend as libvirt_backend
from ansible_collections.vmops.lifecycle.plugins.module_utils.libvirt.connection import uri_secrets
from ansible_collections.vmops.lifecycle.plugins.module_utils.openstack import backend as openstack_backend
from ansible_collections.vmops.lifecycle.plugins.module_utils.core.errors import (
    ConnectionFailed, InvalidRequest, VmopsError)


# doc fragment vmops.lifecycle.backend
BACKEND_OPTIONS = dict(
    backend=dict(type='str', default='auto', choices=['auto', 'libvirt', 'openstack']),
)

# doc fragment vmops.lifecycle.libvirt
LIBVIRT_OPTIONS = dict(
    libvirt_uri=dict(type='str', aliases=['uri']),
)

# doc fragment vmops.lifecycle.openstack: names, aliases and meaning as in the openstack.cloud collection
OPENSTACK_OPTIONS = dict(
    cloud=dict(type='raw'),
    auth=dict(type='dict', no_log=True),
    auth_type=dict(type='str'),
    region_name=dict(type='str'),
    validate_certs=dict(type='bool', aliases=['verify']),
    ca_cert=dict(type='str', aliases=['cacert']),
    client_cert=dict(type='str', aliases=['cert']),
    client_key=dict(type='str', no_log=True, aliases=['key']),
    api_timeout=dict(type='int'),
    interface=dict(type='str', default='public', choices=['admin', 'internal', 'public'],
                   aliases=['endpoint_type']),
    sdk_log_path=dict(type='str'),
    sdk_log_level=dict(type='str', default='INFO', choices=['INFO', 'DEBUG']),
)

# doc fragment vmops.lifecycle.wait
WAIT_OPTIONS = dict(
    wait=dict(type='bool', default=True),
    timeout=dict(type='int', default=180),
    retry_budget=dict(type='int', default=60),
)


def module_options(own_options):
    """The module's own argument spec plus every shared option (deep copies: specs get mutated)."""
    spec = {}
    for shared in (BACKEND_OPTIONS, LIBVIRT_OPTIONS, OPENSTACK_OPTIONS, WAIT_OPTIONS):
        spec.update(copy.deepcopy(shared))
    spec.update(own_options)
    return spec


# What openstacksdk reads from the environment when no cloud or auth is given (an AWX OpenStack
# credential sets OS_CLIENT_CONFIG_FILE and OS_CLOUD).
OPENSTACK_ENVIRONMENT = ('OS_CLOUD', 'OS_CLIENT_CONFIG_FILE', 'OS_AUTH_URL', 'OS_AUTH_TYPE', 'OS_TOKEN')

BACKENDS = {'openstack': openstack_backend, 'libvirt': libvirt_backend}


def chosen_backend(params, environ=None):
    """Which backend the options point at: `backend`, or with 'auto' the connection options given,
    then the environment (OpenStack credentials as openstacksdk reads them), then libvirt."""
    environ = os.environ if environ is None else environ
    openstack_given = params.get('cloud') is not None or params.get('auth') is not None
    libvirt_given = params.get('libvirt_uri') is not None
    if params['backend'] == 'auto':
        if openstack_given and libvirt_given:
            raise InvalidRequest('Both libvirt_uri and OpenStack options (cloud/auth) are set; '
                                 'set backend to say which one is meant.')
        if openstack_given:
            return 'openstack'
        if libvirt_given:
            return 'libvirt'
        return 'openstack' if any(environ.get(name) for name in OPENSTACK_ENVIRONMENT) else 'libvirt'
    if params['backend'] == 'libvirt' and openstack_given and not libvirt_given:
        raise InvalidRequest('backend=libvirt but only OpenStack options (cloud/auth) are set.')
    return params['backend']


def require_library(module, name):
    """Fail the module with the library's install hint when the chosen backend cannot import it."""
    package = BACKENDS[name]
    if not package.HAS_LIBRARY:
        module.fail_json(msg=missing_required_lib(package.LIBRARY), exception=package.LIBRARY_IMPORT_ERROR)


def open_with(module, openers):
    """The one place a backend is chosen: `openers` maps each backend the module can use to a
    callable(params) that opens it.  Checks the library first; refuses a backend not offered."""
    name = chosen_backend(module.params)
    if name not in openers:
        raise InvalidRequest('%s works with the %s backend only; this run points at %s.'
                             % (module._name, ' and '.join(sorted(openers)), name))
    require_library(module, name)
    return openers[name](module.params)


def open_backend(module):
    """Open the chosen backend's one connection for this run (close it with `with`)."""
    return open_with(module, {'openstack': openstack_backend.OpenStackBackend,
                              'libvirt': libvirt_backend.LibvirtBackend.from_params})


def backend_model(module):
    """The state model of the chosen backend, available before any connection is made."""
    return BACKENDS[chosen_backend(module.params)].MODEL


def converge_request(module, request, validate, ensure, drivers=None):
    """The tail every module shares: refuse bad input before connecting, open the backend,
    converge, close, and keep the diff only in diff mode.

    `drivers` maps a backend name to the family's driver class (a core ABC with `for_request`);
    it is handed to `ensure` as its fourth argument."""
    validate(backend_model(module), request)
    with open_backend(module) as backend:
        args = (backend, request, module.check_mode)
        if drivers is not None:
            args += (drivers[backend.model.name].for_request(backend, request),)
        result = ensure(*args)
    if not module._diff:
        result.pop('diff')
    return result


def run_module(module, action):
    """Call `action(module)`, which returns the result dict, and exit the module with it."""
    try:
        result = action(module)
    except (InvalidRequest, ConnectionFailed) as error:
        module.fail_json(msg=error.msg, changed=False, **error.details)
    except VmopsError as error:
        details = dict(error.details)
        instance = details.get('instance') or {}
        module.fail_json(msg=error.msg, changed=bool(instance.get('executed')), **details)
    except Exception as error:  # pylint: disable=broad-except
        # A bug or an unexpected library failure: say so, with what is needed to report it.
        module.fail_json(msg='Unexpected error: %s' % error, exception=traceback.format_exc(),
                         python_version=sys.version.split()[0], libraries=library_versions())
    module.exit_json(**result)


def library_versions():
    """Versions of the libraries a bug report needs."""
    versions = {}
    for distribution in ('libvirt-python', 'openstacksdk', 'keystoneauth1'):
        try:
            versions[distribution] = importlib_metadata.version(distribution)
        except importlib_metadata.PackageNotFoundError:
            versions[distribution] = None
    if libvirt_backend.HAS_LIBRARY:
        versions['libvirt (C library)'] = libvirt_backend.libvirt.getVersion()
    return versions


# Keys of a clouds.yaml-style dict whose values are secrets (openstacksdk's auth plugins' names).
SECRET_KEY_WORDS = ('password', 'secret', 'token', 'passcode', 'totp')


def cloud_secrets(value, key=''):
    """The secret strings inside a `cloud:` given as a dict (auth.password, application_credential_secret ...)."""
    if isinstance(value, dict):
        found = set()
        for name, item in value.items():
            found |= cloud_secrets(item, str(name))
        return found
    if isinstance(value, (list, tuple)):
        found = set()
        for item in value:
            found |= cloud_secrets(item, key)
        return found
    if isinstance(value, str) and value and any(word in key.lower() for word in SECRET_KEY_WORDS):
        return {value}
    return set()


def uri_passwords(params):
    """The passwords written into the userinfo of a URI option (qemu+tcp://user:password@host/system)."""
    found = set()
    for value in params.values():
        for item in value if isinstance(value, list) else [value]:   # rolling_plan's hosts are URIs on libvirt
            found.update(uri_secrets(item))
    return found


def secrets_of(params):
    return cloud_secrets(params.get('cloud')) | uri_passwords(params)


class VmopsModule(AnsibleModule):
    """AnsibleModule that also hides the secrets of a `cloud:` dict and the password of a URI.  Neither
    option can be no_log: a cloud name or a URI would then be masked in every message.  Their secrets join
    no_log_values before the invocation is logged, so neither the log nor the result (its
    invocation.module_args, a message) shows them."""

    def _log_invocation(self):
        self.no_log_values.update(secrets_of(self.params))
        super()._log_invocation()


def new_module(own_options, **kwargs):
    """An AnsibleModule with the shared options added."""
    module = VmopsModule(argument_spec=module_options(own_options), **kwargs)
    module.no_log_values.update(secrets_of(module.params))    # when no_log skipped the log
    return module
