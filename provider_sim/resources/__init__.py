"""Rendering: each record as Stripe's JSON object, in the current API shape or an older one."""
