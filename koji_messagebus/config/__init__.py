"""The plugin's config: every option with its default (options), loaded and validated at once into a
Config (settings) read through typed frozen sections (sections), with the rules across keys
(checks), warnings on weak spots (advice), safe file reads (files), secret hiding (redact), the
file's text in messages (text) and the sample config (sample); the hub's database settings from
hub.conf (hubconf); TLS and SASL failures and httpd's group (security, httpd)."""
