"""The test hub served by a private Apache httpd + mod_wsgi (scripts/services/apache.sh)."""
