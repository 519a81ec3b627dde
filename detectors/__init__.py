"""creditwatch: detectors."""
