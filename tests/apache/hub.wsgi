# mod_wsgi's script for the test hub (scripts/services/apache.sh): this checkout first on sys.path,
# then the application of tests/apache/hubapp.py.
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.apache.hubapp import application  # noqa: E402,F401
