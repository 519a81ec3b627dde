"""``python -m creditwatch`` runs the console script."""

from creditwatch.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
