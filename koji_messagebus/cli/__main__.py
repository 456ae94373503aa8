"""`python -m koji_messagebus.cli`."""

import sys

from . import main

sys.exit(main())
