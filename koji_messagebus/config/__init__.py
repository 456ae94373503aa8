"""The plugin's config: every option, its default and validation, parsed once into typed frozen
sections (settings); the hub's database settings from hub.conf (hubconf); TLS, SASL and file
checks (security, httpd); the config file's text (text)."""
