"""creditwatch: creditwatch."""
