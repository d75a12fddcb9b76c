"""Test support for operatord.

`ApiServer` (the embedded API server of `operatord.apiserver`, re-exported here: this is the
stable import) serves the Kubernetes API over real HTTP on 127.0.0.1 so that the official
`kubernetes` client, kubectl and kopf talk to it unmodified. See docs/apiserver.md.
`OperatorProcess` runs your operator (`operatord run`) against it; `wait_for` polls a condition
with a deadline, for tests of eventually consistent state.
"""

from operatord.apiserver import ApiServer, FaultsClient, serve_forever, write_kubeconfig
from operatord.testing.operator import OperatorProcess, free_port
from operatord.testing.waiting import wait_for

__all__ = [
    "ApiServer",
    "FaultsClient",
    "OperatorProcess",
    "free_port",
    "serve_forever",
    "wait_for",
    "write_kubeconfig",
]
