"""`python infer.py --help`: see cascadener/cli/infer.py (also installed as `cascadener infer`)."""
import sys

from cascadener.cli.infer import main

if __name__ == "__main__":
    sys.exit(main())
