"""creditwatch: risk."""
