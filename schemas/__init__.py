"""creditwatch: schemas."""
