"""The traits of a compute host's resource provider, read with plain openstacksdk (never the collection).

  placement_traits.py --cloud C HOST   -> JSON: {"provider": UUID, "traits": [...]}
"""

import argparse
import json

import openstack


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--cloud', required=True)
    parser.add_argument('host')
    args = parser.parse_args()
    conn = openstack.connect(cloud=args.cloud)
    headers = {'OpenStack-API-Version': 'placement 1.29'}
    providers = conn.placement.get('/resource_providers', params={'name': args.host}, headers=headers).json()
    provider = providers['resource_providers'][0]['uuid']
    traits = conn.placement.get('/resource_providers/%s/traits' % provider, headers=headers).json()['traits']
    print(json.dumps({'provider': provider, 'traits': sorted(traits)}))
    conn.close()


if __name__ == '__main__':
    main()
