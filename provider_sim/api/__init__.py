"""The Stripe API routes (`/v1/...`): thin handlers that read parameters, call the domain
modules and answer rendered objects."""
