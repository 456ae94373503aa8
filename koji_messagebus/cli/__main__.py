"""`python -m koji_messagebus.cli`."""

import sys

from koji_messagebus.cli import main

sys.exit(main())
