"""`python eval.py --help`: see cascadener/cli/evaluate.py (also installed as `cascadener eval`)."""
import sys

from cascadener.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
