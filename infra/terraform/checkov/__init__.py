"""checkov custom checks for the huaweicloud provider (loaded with --external-checks-dir)."""
