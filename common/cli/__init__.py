"""The command lines' shared options and parsers (parsers), --config files included; no torch at import."""
