"""Image backbones (and, later, branches and fusion heads), each created by name from a registry."""
