from retention import admin_renewal_offers  # noqa: F401  (registers the renewal-offer admin)
