import os
import signal

signal.signal(signal.SIGINT, lambda signum, frame: os._exit(130))  # quiet during imports, as run.py

import sys  # noqa: E402

from harness.cli import main  # noqa: E402

sys.exit(main())
