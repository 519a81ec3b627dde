"""creditwatch: alerts."""
