-- ERP simulator: journal lines in the shape of NetSuite / Dynamics 365 project actuals.
-- Runs with search_path set to the instance's schema (erp_sim_<name>); names no schema itself.

CREATE TABLE journal_lines (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    external_id          text        NOT NULL UNIQUE,
    line_type            text        NOT NULL CHECK (line_type IN ('COST', 'REVENUE')),
    project              text        NOT NULL,
    worker               text        NOT NULL,
    tran_date            date        NOT NULL,
    amount               numeric     NOT NULL,
    currency             char(3)     NOT NULL,
    cost_centre          text,
    memo                 text,
    reverses_external_id text,
    content_hash         text        NOT NULL,
    version              integer     NOT NULL DEFAULT 1,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX journal_lines_project ON journal_lines (project, tran_date);
