"""A stateful Stripe-compatible provider simulator for local runs and tests (DESIGN.md section 9).

`python -m provider_sim` serves the Stripe API subset the services use, with current object
shapes, signed webhook delivery with retries, and a control API (`/_sim/...`) that completes
checkouts, acts in the portal, moves simulated time and shapes delivery."""
