"""Simulators of the systems downstream connectors deliver to: ERPs and a Stripe-like billing engine.

Each is a small FastAPI service with a durable store in a PostgreSQL schema of its own, migrated by
`backbone.migrations` from the versioned SQL files in `migrations/<simulator>/`, with faults that can
be injected by flags or at run time (`faults.py`), Prometheus metrics, JSON logs and `/healthz`.
`backbone run erp-sim --name NAME` and `backbone run billing-sim` serve them (`server.py`); tests build
the apps directly with `erp.create_erp_app` and `billing.create_billing_app`.
"""
