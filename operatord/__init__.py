"""operatord: a multi-process, sharded daemon for Kubernetes operators written in Python."""
