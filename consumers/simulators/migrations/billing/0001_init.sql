-- Billing simulator: Stripe-shaped draft invoices, invoice items and idempotency keys.
-- Runs with search_path set to the simulator's schema; names no schema itself.

CREATE TABLE invoices (
    id         text        PRIMARY KEY,
    customer   text        NOT NULL,
    period     char(7)     NOT NULL,  -- YYYY-MM, the month of the items' work dates
    currency   char(3)     NOT NULL,  -- lowercase, as Stripe writes it
    status     text        NOT NULL DEFAULT 'draft',
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (customer, period, currency)
);

CREATE TABLE invoice_items (
    id           text        PRIMARY KEY,
    invoice_id   text        NOT NULL REFERENCES invoices (id),
    customer     text        NOT NULL,
    amount       bigint      NOT NULL,  -- signed integer minor units; negative is a credit
    currency     char(3)     NOT NULL,
    description  text,
    tax_code     text        NOT NULL,
    period_start bigint,
    period_end   bigint,
    work_date    date        NOT NULL,
    metadata     jsonb       NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX invoice_items_invoice ON invoice_items (invoice_id);
CREATE INDEX invoice_items_customer ON invoice_items (customer, created_at);

-- The first response per Idempotency-Key, replayed to retries (Stripe keeps keys 24 hours).
CREATE TABLE idempotency_keys (
    key         text        PRIMARY KEY,
    fingerprint text        NOT NULL,
    status_code integer     NOT NULL,
    response    text        NOT NULL,  -- the exact bytes answered, replayed as they were
    created_at  timestamptz NOT NULL DEFAULT now()
);
