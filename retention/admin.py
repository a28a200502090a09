from retention import admin_winback  # noqa: F401  (win-back campaigns, records and the staff report)
