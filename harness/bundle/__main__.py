"""``python -m harness.bundle``: the bundle tool's own command line."""
import sys

from harness.bundle import main

sys.exit(main())
