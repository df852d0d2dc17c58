"""Agentless ML2 mechanism driver of the vmops OpenStack sandbox.

Binds every port of vnic_type normal on a local, flat or vlan segment for any host, with
vif_type 'tap' and the port status ACTIVE (there is no L2 agent to report the device up):

* Nova's fake driver ignores the VIF entirely.
* Nova's libvirt driver plugs a 'tap' VIF by creating a tap device (ip tuntap, through privsep)
  and gives the guest an <interface type='ethernet'> on it: the guest boots with a NIC that is
  connected to nothing, which is all the sandbox needs.

Registered as ML2 mechanism driver 'vmops' through the entry point in
vmops_sandbox-1.0.dist-info (found because neutron-server runs with this directory on PYTHONPATH;
no file of the Debian packages is changed).
"""
from neutron_lib.api.definitions import portbindings
from neutron_lib import constants
from neutron_lib.plugins.ml2 import api
from oslo_log import log as logging

LOG = logging.getLogger(__name__)

BINDABLE_TYPES = (constants.TYPE_LOCAL, constants.TYPE_FLAT, constants.TYPE_VLAN)
UNBOUND = (portbindings.VIF_TYPE_UNBOUND, portbindings.VIF_TYPE_BINDING_FAILED)


class VmopsMechanismDriver(api.MechanismDriver):

    def initialize(self):
        LOG.info("vmops agentless mechanism driver: binding every normal port as vif_type=tap")

    def bind_port(self, context):
        vnic_type = context.current.get(portbindings.VNIC_TYPE, portbindings.VNIC_NORMAL)
        if vnic_type != portbindings.VNIC_NORMAL:
            LOG.debug("vmops: not binding port %s of vnic_type %s", context.current['id'],
                      vnic_type)
            return
        for segment in context.segments_to_bind:
            if segment[api.NETWORK_TYPE] in BINDABLE_TYPES:
                context.set_binding(
                    segment[api.ID], portbindings.VIF_TYPE_TAP,
                    {portbindings.CAP_PORT_FILTER: False,
                     portbindings.VIF_DETAILS_CONNECTIVITY: self.connectivity},
                    status=constants.PORT_STATUS_ACTIVE)
                LOG.debug("vmops: bound port %s on host %s (segment %s)",
                          context.current['id'], context.host, segment[api.ID])
                return

    @property
    def connectivity(self):
        return portbindings.CONNECTIVITY_L2

    def update_port_postcommit(self, context):
        # A bound port whose status went DOWN (e.g. after a live migration activated the binding
        # on the destination) comes back ACTIVE, as an agent would report it.
        port = context.current
        if (context.host and context.vif_type not in UNBOUND
                and port.get('status') == constants.PORT_STATUS_DOWN
                and port.get('device_owner', '').startswith('compute:')):
            try:
                context._plugin.update_port_status(
                    context._plugin_context, port['id'], constants.PORT_STATUS_ACTIVE,
                    context.host)
            except Exception:  # noqa: BLE001 - the status is cosmetic here
                LOG.exception("vmops: could not set port %s ACTIVE", port['id'])
