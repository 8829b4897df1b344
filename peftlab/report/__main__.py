"""`python -m peftlab.report DIR`: see peftlab/report/cli.py."""

import sys

from peftlab.report.cli import main

sys.exit(main())
