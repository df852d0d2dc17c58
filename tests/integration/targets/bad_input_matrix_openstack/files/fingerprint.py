"""What bad inputs must never change, read with plain openstacksdk (never through the collection):
the servers, images and volumes named PREFIX... (a bad input accepted by mistake would touch or make
one of them: status, task state, lock, host, flavor, metadata), every compute service (status,
reason, forced down) and every aggregate's hosts.  (Other tests' servers are left out: on a shared
sandbox they change on their own.)

  fingerprint.py --cloud C PREFIX   -> one JSON document on stdout
"""

import argparse
import json

import openstack


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--cloud', required=True)
    parser.add_argument('prefix')
    args = parser.parse_args()
    conn = openstack.connect(cloud=args.cloud)
    servers = sorted((s.id, s.name, s.status, s.task_state, bool(s.is_locked), s.compute_host,
                      (s.flavor or {}).get('original_name'), sorted((s.metadata or {}).items()))
                     for s in conn.compute.servers(all_projects=True) if (s.name or '').startswith(args.prefix))
    # up/down is left out: it follows each service's heartbeat, which no input changes
    services = sorted((s.host, s.binary, s.status, s.disabled_reason, bool(s.is_forced_down))
                      for s in conn.compute.services())
    aggregates = sorted((a.name, sorted(a.hosts or [])) for a in conn.compute.aggregates())
    images = sorted((i.id, i.status) for i in conn.image.images() if (i.name or '').startswith(args.prefix))
    volumes = sorted((v.id, v.status) for v in conn.block_storage.volumes(all_projects=True)
                     if (v.name or '').startswith(args.prefix))
    print(json.dumps({'servers': servers, 'services': services, 'aggregates': aggregates, 'images': images,
                      'volumes': volumes}, sort_keys=True))


if __name__ == '__main__':
    main()
