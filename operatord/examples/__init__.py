"""The example Widget operator, shipped inside the package so that `operatord demo` runs from an
installed operatord. `widgets.py` and `widget-crd.yaml` are the repository's
`examples/widgets.py` and `examples/widget-crd.yaml` (symbolic links in a checkout; copies in a
built package)."""
