"""The lakeops test suite (a package so its helper modules import as ``tests.<name>``)."""
