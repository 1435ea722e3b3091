"""`python -m harness.cli ...` is `tfbench ...`."""
import os
import sys

from harness.cli import main

os.environ.setdefault("PYTHONUNBUFFERED", "1")
sys.exit(main())
