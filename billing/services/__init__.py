"""Billing's write services. Each is keyword-only, typed and runs its writes in a transaction."""
