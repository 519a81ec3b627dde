"""creditwatch: config."""
