"""prometheus/ and alertmanager/: the rules with promtool, the shipped configuration in the real binaries,
and the rules checked against the exporter's own view."""
