"""API keys: creation, listing, revocation, and the check every API request goes through."""
