"""creditwatch: streams."""
