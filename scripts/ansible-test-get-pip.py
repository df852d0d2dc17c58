"""Stand-in for the get-pip bootstrap script that ansible-test downloads from its own CI host.

That host is out of reach here (only package registries are), so scripts/bootstrap puts this file
where ansible-test caches the script. It does what get-pip does: put pip into the running (empty)
virtual environment, then `pip install` the arguments ansible-test passes (pip==X and friends),
from PyPI.
"""

import ensurepip
import os
import subprocess
import sys

SYSTEM_CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt'

ensurepip.bootstrap(upgrade=True)
arguments = [arg for arg in sys.argv[1:] if arg not in ('--no-setuptools', '--no-wheel')]
environment = dict(os.environ)
# ansible-test strips the environment; the pip that ensurepip brings trusts the system's CA
# bundle (which includes this machine's registry proxy) only through this variable.
if 'REQUESTS_CA_BUNDLE' not in environment and os.path.exists(SYSTEM_CA_BUNDLE):
    environment['REQUESTS_CA_BUNDLE'] = SYSTEM_CA_BUNDLE
sys.exit(subprocess.call([sys.executable, '-m', 'pip', 'install'] + arguments, env=environment))
