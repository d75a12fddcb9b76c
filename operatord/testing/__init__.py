"""Test support for operatord: an embedded Kubernetes API server you can run in-process."""
