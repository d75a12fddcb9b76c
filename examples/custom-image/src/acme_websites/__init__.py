"""Example handler package shipped in a custom operatord image."""
