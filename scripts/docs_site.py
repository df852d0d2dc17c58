#!/usr/bin/env python3
"""Builds the collection's documentation site with antsibull-docs and Sphinx, any warning failing it.

Usage: scripts/docs_site.py DEST   (the collection must be on ANSIBLE_COLLECTIONS_PATH)

The pages link to a few labels of the Ansible documentation, and to the environment variables of
ansible-core's settings, through intersphinx. This machine (and CI) has no route to
docs.ansible.com, so the site is built against a local inventory that names those labels and the
variables ansible-core defines; a link to anything else outside is an undefined reference and fails
the build.
"""

import os
import subprocess
import sys
import zlib

import ansible.config
import yaml

COLLECTION = 'vmops.lifecycle'
ANSIBLE_DOCS = 'https://docs.ansible.com/projects/ansible/devel/'
# Labels of the Ansible documentation that antsibull-docs' generated pages refer to.
ANSIBLE_LABELS = {
    'ansible_configuration_settings': ('reference_appendices/config.html', 'Ansible Configuration Settings'),
    'common_return_values': ('reference_appendices/common_return_values.html', 'Return Values'),
}


def core_environment_variables():
    """The environment variables of ansible-core's settings, each an anchor of the Ansible
    documentation's configuration page (plugin options such as the inventory cache's link there)."""
    with open(os.path.join(os.path.dirname(ansible.config.__file__), 'base.yml')) as base:
        settings = yaml.safe_load(base)
    return sorted({entry['name'] for setting in settings.values() for entry in setting.get('env') or []})


def write_inventory(path):
    """A Sphinx object inventory (version 2) with the Ansible labels and environment variables,
    as intersphinx reads it."""
    lines = ''.join('%s std:label -1 %s#%s %s\n' % (label, page, label.replace('_', '-'), title)
                    for label, (page, title) in sorted(ANSIBLE_LABELS.items()))
    lines += ''.join('%s std:envvar -1 reference_appendices/config.html#envvar-%s -\n' % (name, name)
                     for name in core_environment_variables())
    header = ('# Sphinx inventory version 2\n# Project: Ansible\n# Version: devel\n'
              '# The remainder of this file is compressed using zlib.\n')
    with open(path, 'wb') as inventory:
        inventory.write(header.encode() + zlib.compress(lines.encode()))


def main(dest):
    os.makedirs(dest, exist_ok=True)
    subprocess.run(['antsibull-docs', 'sphinx-init', '--use-current', '--fail-on-error',
                    '--dest-dir', dest, COLLECTION], check=True, stdout=subprocess.DEVNULL)
    write_inventory(os.path.join(dest, 'ansible_devel.inv'))
    with open(os.path.join(dest, 'conf.py'), 'a') as conf:
        conf.write('\n# Offline: only the local inventory (scripts/docs_site.py), never the network.\n'
                   'intersphinx_mapping = {%r: (%r, %r)}\n'
                   % ('ansible_devel', ANSIBLE_DOCS, os.path.join(os.path.abspath(dest), 'ansible_devel.inv')))
    # build.sh (from sphinx-init): antsibull-docs collection --fail-on-error, then sphinx-build -W.
    return subprocess.run(['bash', os.path.join(dest, 'build.sh')]).returncode


if __name__ == '__main__':
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[2])
    sys.exit(main(sys.argv[1]))
