"""``python -m harness.bundle``: the bundle tool's own command line."""
import sys

from harness.bundle.cli import main

sys.exit(main())
