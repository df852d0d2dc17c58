# -*- coding: utf-8 -*-
# Copyright: vmops.lifecycle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Same names, aliases and meaning as the openstack.cloud collection's options, so that
    # playbooks and AWX credentials move over without rewriting.
    DOCUMENTATION = r'''
options:
  cloud:
    description:
      - Name of a cloud in C(clouds.yaml), or a dict holding a whole cloud configuration
        (as one entry of C(clouds.yaml) would).
      - Not needed when O(auth) or the C(OS_*) environment variables are set.
      - When no O(cloud) or O(auth) is given, openstacksdk reads the environment (E(OS_CLOUD),
        E(OS_CLIENT_CONFIG_FILE), E(OS_AUTH_URL) ...) as openstack.cloud does, and with
        O(backend=auto) those variables select the OpenStack backend.
    type: raw
  auth:
    description:
      - Authentication data for the cloud's auth plugin; for the default password plugin
        C(auth_url), C(username), C(password), C(project_name) and the domain names.
    type: dict
  auth_type:
    description:
      - Name of the keystoneauth plugin, when not password.
    type: str
  region_name:
    description:
      - Name of the region.
    type: str
  validate_certs:
    description:
      - Whether to verify TLS certificates of the API endpoints.
    type: bool
    aliases: [verify]
  ca_cert:
    description:
      - Path to a CA bundle for verifying the endpoints.
    type: str
    aliases: [cacert]
  client_cert:
    description:
      - Path to a client certificate, for clouds that require one.
    type: str
    aliases: [cert]
  client_key:
    description:
      - Path to the key of O(client_cert).
    type: str
    aliases: [key]
  api_timeout:
    description:
      - Seconds an individual API request may take.
    type: int
  interface:
    description:
      - Which endpoints of the service catalog to use.
    type: str
    choices: [admin, internal, public]
    default: public
    aliases: [endpoint_type]
  sdk_log_path:
    description:
      - Path of a file that openstacksdk logs to. Request bodies that carry secrets (tokens,
        passwords) are logged by the SDK at V(DEBUG); keep that file private.
    type: str
  sdk_log_level:
    description:
      - Level of openstacksdk's log in O(sdk_log_path).
    type: str
    choices: [INFO, DEBUG]
    default: INFO
requirements:
  - openstacksdk >= 1.0 on the host that runs the module, for the OpenStack backend
'''
