"""`python -m harness.localfleet.chaos`: the chaos controller of one cluster.

In the fleet it runs as the pod of the Deployment chaos-mesh/chaos-controller-manager (image
ghcr.io/chaos-mesh/chaos-mesh, resolved by the node agent's image catalogue), with the in-cluster
service account; --kubeconfig and --context run it from outside a cluster.
"""

import argparse
from datetime import datetime

from kubernetes import client, config

from harness.localfleet.chaos.controller import Controller


def say(line: str) -> None:
    print(f"{datetime.now().strftime('%H:%M:%S.%f')[:-3]} chaos-controller: {line}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m harness.localfleet.chaos", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--kubeconfig", help="run outside a cluster with this kubeconfig")
    parser.add_argument("--context", help="the kubeconfig's context (default: its current one)")
    args, ignored = parser.parse_known_args(argv)
    if ignored:
        say(f"ignoring the image's own options: {' '.join(ignored)}")
    if args.kubeconfig:
        api = config.new_client_from_config(args.kubeconfig, context=args.context)
    else:
        loader = config.incluster_config.InClusterConfigLoader(
            config.incluster_config.SERVICE_TOKEN_FILENAME, config.incluster_config.SERVICE_CERT_FILENAME
        )
        configuration = client.Configuration()
        loader.load_and_set(configuration)
        api = client.ApiClient(configuration)
    say("watching NetworkChaos, StressChaos, PodChaos and pods")
    Controller(api, say).run_forever()


if __name__ == "__main__":
    main()
