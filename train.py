"""`python train.py --help`: see cascadener/cli/train.py (also installed as `cascadener train`)."""
import sys

from cascadener.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
