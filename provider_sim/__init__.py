"""A stateful Stripe-compatible provider simulator for local runs and tests (its control endpoints
are in docs/contract.md).

`python -m provider_sim` serves the Stripe API subset the services use, with current object
shapes, signed webhook delivery with retries, and a control API (`/_sim/...`) that completes
checkouts, acts in the portal, moves simulated time and shapes delivery."""
