"""Local development tools: an embedded Redis and the one-command local stack."""
