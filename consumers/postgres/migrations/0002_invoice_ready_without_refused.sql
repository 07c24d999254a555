-- A candidate the billing engine refused (its latest billing response is REJECTED) is not ready to
-- invoice: the topology takes the line back and bills the entry again, under a new candidate id, once its
-- terms are corrected. Counting it here would show the same time twice after the correction.
CREATE OR REPLACE VIEW invoice_ready_by_client_period AS
SELECT c.client_id,
       date_trunc('month', c.work_date)::date AS period,
       c.currency,
       count(*)                                AS lines,
       sum(c.billable_minutes)                 AS billable_minutes,
       sum(c.amount)                           AS amount
FROM invoice_candidates c
WHERE NOT EXISTS (
    SELECT 1 FROM billing_responses r WHERE r.candidate_id = c.candidate_id AND r.status = 'REJECTED'
)
GROUP BY c.client_id, date_trunc('month', c.work_date), c.currency;
