"""The node agent: what a kubelet and container runtime do, for one node of the local fleet.

It talks to its cluster's API server only through the API: it registers the Node, heartbeats through
its Lease, runs the pods the scheduler binds to it as processes in their own network and mount
namespaces, probes them and writes their status the way the kubelet does.
"""

STRATEGIC = "application/strategic-merge-patch+json"
POD_CAPACITY = 110
