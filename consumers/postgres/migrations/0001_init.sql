-- The PostgreSQL read model of backbone's output topics (`backbone run sink`, consumers/postgres).
-- Runs with search_path set to the sink's schema; names no schema itself. Money is numeric, never float.
-- Every row remembers the record it came from (source_topic, source_partition, source_offset).

-- Where each sink group has written up to: the next offset to read, committed in the same transaction
-- as the rows (backbone/streams/sink.py). Kafka offset commits are not used.
CREATE TABLE sink_offsets (
    group_id    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);

-- billing.invoice-candidates.v1: immutable lines, one per candidate_id.
CREATE TABLE invoice_candidates (
    candidate_id          text        PRIMARY KEY,
    kind                  text        NOT NULL,
    time_entry_id         text        NOT NULL,
    revision              integer     NOT NULL,
    project_id            text        NOT NULL,
    client_id             text        NOT NULL,
    worker_id             text        NOT NULL,
    role                  text,
    task_id               text,
    work_date             date        NOT NULL,
    contract_id           text        NOT NULL,
    contract_version      integer     NOT NULL,
    billable_minutes      integer     NOT NULL,
    hourly_rate           numeric     NOT NULL,
    discount_percent      numeric     NOT NULL,
    amount                numeric     NOT NULL,
    currency              char(3)     NOT NULL,
    tax_code              text,
    billing_entity        text,
    replaces_candidate_id text,
    capped                boolean     NOT NULL,
    event_id              text,
    occurred_at           timestamptz NOT NULL,
    source_system         text        NOT NULL,
    correlation_id        text,
    source_topic          text        NOT NULL,
    source_partition      integer     NOT NULL,
    source_offset         bigint      NOT NULL,
    recorded_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX invoice_candidates_project ON invoice_candidates (project_id, work_date);
CREATE INDEX invoice_candidates_client ON invoice_candidates (client_id, work_date);
CREATE INDEX invoice_candidates_entry ON invoice_candidates (time_entry_id);
CREATE INDEX invoice_candidates_correlation ON invoice_candidates (correlation_id);
CREATE INDEX invoice_candidates_occurred ON invoice_candidates (occurred_at);

-- erp.posting-requests.v1: immutable, one per posting_id.
CREATE TABLE posting_requests (
    posting_id          text        PRIMARY KEY,
    posting_type        text        NOT NULL,
    time_entry_id       text        NOT NULL,
    revision            integer     NOT NULL,
    project_id          text        NOT NULL,
    worker_id           text        NOT NULL,
    work_date           date        NOT NULL,
    amount              numeric     NOT NULL,
    currency            char(3)     NOT NULL,
    erp_target          text        NOT NULL,
    reverses_posting_id text,
    event_id            text,
    occurred_at         timestamptz NOT NULL,
    source_system       text        NOT NULL,
    correlation_id      text,
    source_topic        text        NOT NULL,
    source_partition    integer     NOT NULL,
    source_offset       bigint      NOT NULL,
    recorded_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX posting_requests_project ON posting_requests (project_id, work_date);
CREATE INDEX posting_requests_entry ON posting_requests (time_entry_id);
CREATE INDEX posting_requests_correlation ON posting_requests (correlation_id);
CREATE INDEX posting_requests_target ON posting_requests (erp_target, posting_type);

-- erp.posting-acks.v1: every acknowledgment (history, one row per posting and ack event id) ...
CREATE TABLE posting_ack_history (
    posting_id       text        NOT NULL,
    ack_id           text        NOT NULL,  -- the event id (derived from the payload when it had none)
    erp_target       text        NOT NULL,
    status           text        NOT NULL,
    erp_document_id  text,
    error_code       text,
    error_message    text,
    occurred_at      timestamptz NOT NULL,
    source_system    text        NOT NULL,
    correlation_id   text,
    source_topic     text        NOT NULL,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (posting_id, ack_id)
);
CREATE INDEX posting_ack_history_occurred ON posting_ack_history (occurred_at);

-- ... and the latest one per posting (the record with the highest offset wins).
CREATE TABLE posting_acks (LIKE posting_ack_history INCLUDING DEFAULTS, PRIMARY KEY (posting_id));
CREATE INDEX posting_acks_status ON posting_acks (status, erp_target);
CREATE INDEX posting_acks_correlation ON posting_acks (correlation_id);

-- billing.responses.v1: history and latest state per candidate, like the acks.
CREATE TABLE billing_response_history (
    candidate_id     text        NOT NULL,
    response_id      text        NOT NULL,
    status           text        NOT NULL,
    invoice_id       text,
    reason_code      text,
    message          text,
    occurred_at      timestamptz NOT NULL,
    source_system    text        NOT NULL,
    correlation_id   text,
    source_topic     text        NOT NULL,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (candidate_id, response_id)
);
CREATE INDEX billing_response_history_occurred ON billing_response_history (occurred_at);

CREATE TABLE billing_responses (LIKE billing_response_history INCLUDING DEFAULTS, PRIMARY KEY (candidate_id));
CREATE INDEX billing_responses_status ON billing_responses (status);
CREATE INDEX billing_responses_invoice ON billing_responses (invoice_id);
CREATE INDEX billing_responses_correlation ON billing_responses (correlation_id);

-- ops.exceptions.v1: every state an exception went through, and its latest state.
CREATE TABLE exception_history (
    exception_id     text        NOT NULL,
    event_id         text        NOT NULL,  -- derived from the payload when it had none
    kind             text        NOT NULL,
    status           text        NOT NULL,
    subject_type     text        NOT NULL,
    subject_id       text        NOT NULL,
    project_id       text,
    owner            text        NOT NULL,
    amount_at_risk   numeric,
    currency         char(3),
    details          text        NOT NULL,
    opened_at        timestamptz NOT NULL,
    resolved_at      timestamptz,
    occurred_at      timestamptz NOT NULL,
    source_system    text        NOT NULL,
    correlation_id   text,
    source_topic     text        NOT NULL,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (exception_id, event_id)
);
CREATE INDEX exception_history_occurred ON exception_history (occurred_at);

CREATE TABLE exceptions (LIKE exception_history INCLUDING DEFAULTS, PRIMARY KEY (exception_id));
CREATE INDEX exceptions_status ON exceptions (status, owner, kind);
CREATE INDEX exceptions_project ON exceptions (project_id, status);
CREATE INDEX exceptions_subject ON exceptions (subject_type, subject_id);
CREATE INDEX exceptions_correlation ON exceptions (correlation_id);
CREATE INDEX exceptions_opened ON exceptions (opened_at);

-- Dead letters: every record of the event topics' `<topic>.dlq` (with its backbone.error.* headers as
-- columns), and every record the sink itself could not decode or store (error_processor names it).
CREATE TABLE dead_letters (
    source_topic     text        NOT NULL,  -- the topic the sink read it from (a .dlq topic, or an event topic)
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL,
    record_key       bytea,
    record_value     bytea,
    headers          jsonb       NOT NULL DEFAULT '[]',  -- [[name, value as text], ...] in record order
    error_topic      text,
    error_partition  integer,
    error_offset     bigint,
    error_class      text,
    error_message    text,
    error_processor  text,
    error_at         timestamptz,
    correlation_id   text,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_topic, source_partition, source_offset)
);
CREATE INDEX dead_letters_error_topic ON dead_letters (error_topic, error_at);
CREATE INDEX dead_letters_correlation ON dead_letters (correlation_id);

-- Views analysts use directly -------------------------------------------------------------------------

-- Invoice-ready lines by client, billing period (month of the work date) and currency.
CREATE VIEW invoice_ready_by_client_period AS
SELECT client_id,
       date_trunc('month', work_date)::date AS period,
       currency,
       count(*)                              AS lines,
       sum(billable_minutes)                 AS billable_minutes,
       sum(amount)                           AS amount
FROM invoice_candidates
GROUP BY client_id, date_trunc('month', work_date), currency;

-- Time entries blocked from billing: those with an OPEN exception, valued where the exception says.
CREATE VIEW blocked_entries AS
SELECT subject_id   AS time_entry_id,
       project_id,
       array_agg(DISTINCT kind ORDER BY kind) AS kinds,
       array_agg(DISTINCT owner ORDER BY owner) AS owners,
       min(opened_at) AS oldest_opened_at,
       max(amount_at_risk) AS amount_at_risk,
       max(currency) AS currency
FROM exceptions
WHERE status = 'OPEN' AND subject_type = 'TIME_ENTRY'
GROUP BY subject_id, project_id;

-- Revenue posted to the ERP (REVENUE postings acknowledged POSTED) next to what billing accepted
-- (candidates whose latest billing response is ACCEPTED), per project and currency.
CREATE VIEW posted_vs_billed_by_project AS
WITH posted AS (
    SELECT r.project_id, r.currency, sum(r.amount) AS amount
    FROM posting_requests r
    JOIN posting_acks a ON a.posting_id = r.posting_id AND a.status = 'POSTED'
    WHERE r.posting_type = 'REVENUE'
    GROUP BY r.project_id, r.currency
), billed AS (
    SELECT c.project_id, c.currency, sum(c.amount) AS amount
    FROM invoice_candidates c
    JOIN billing_responses b ON b.candidate_id = c.candidate_id AND b.status = 'ACCEPTED'
    GROUP BY c.project_id, c.currency
)
SELECT coalesce(p.project_id, b.project_id) AS project_id,
       coalesce(p.currency, b.currency)     AS currency,
       coalesce(p.amount, 0)                AS posted_revenue,
       coalesce(b.amount, 0)                AS billed,
       coalesce(p.amount, 0) - coalesce(b.amount, 0) AS difference
FROM posted p
FULL JOIN billed b ON b.project_id = p.project_id AND b.currency = p.currency;
