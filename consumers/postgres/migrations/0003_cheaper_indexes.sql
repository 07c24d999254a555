-- Indexes that answer the same questions for less of PostgreSQL's CPU per stored row.
--
-- Index upkeep is most of what storing a row costs the database: a binary COPY of invoice candidates with
-- uuid ids into a table of 200,000-300,000 rows cost 35-38 µs of PostgreSQL's CPU per row with 0001's
-- indexes, 30-32 with these (docs/benchmarks.md, "The PostgreSQL sink", seventh session).
--
-- Ids looked up by equality only (correlation ids, time entry ids, invoice ids) get hash indexes: a B-tree
-- insert of a random text key walks the tree comparing strings and dirties a random leaf page; a hash index
-- stores a 4-byte hash in the key's bucket. `WHERE correlation_id = $1` uses either; ranges, sorting and
-- LIKE on these columns are not operations questions (and a hash index serves no uniqueness: none of them
-- is a key). Keys and multi-column indexes stay B-trees.
--
-- The event times of the append-only tables (invoice_candidates and the three histories) get BRIN indexes:
-- rows are appended in the order the sink reads them, so occurred_at follows the rows' place in the table
-- and the lowest and highest occurred_at of every 128 pages answer "what happened between T1 and T2" by a
-- bitmap scan of those ranges. Its CPU per row is about the B-tree's (a rising key always lands on the
-- rightmost leaf), but it writes a tenth less WAL per candidate and is kilobytes where the B-tree was
-- megabytes. autosummarize has autovacuum summarise each range once the next one starts; until then the
-- newest range is always read, so no row is missed. The latest-state tables keep B-trees on their times:
-- their rows are rewritten out of time order.
DROP INDEX invoice_candidates_entry;
CREATE INDEX invoice_candidates_entry ON invoice_candidates USING hash (time_entry_id);
DROP INDEX invoice_candidates_correlation;
CREATE INDEX invoice_candidates_correlation ON invoice_candidates USING hash (correlation_id);
DROP INDEX invoice_candidates_occurred;
CREATE INDEX invoice_candidates_occurred ON invoice_candidates USING brin (occurred_at) WITH (autosummarize = on);

DROP INDEX posting_requests_entry;
CREATE INDEX posting_requests_entry ON posting_requests USING hash (time_entry_id);
DROP INDEX posting_requests_correlation;
CREATE INDEX posting_requests_correlation ON posting_requests USING hash (correlation_id);

DROP INDEX posting_ack_history_occurred;
CREATE INDEX posting_ack_history_occurred ON posting_ack_history USING brin (occurred_at) WITH (autosummarize = on);
DROP INDEX posting_acks_correlation;
CREATE INDEX posting_acks_correlation ON posting_acks USING hash (correlation_id);

DROP INDEX billing_response_history_occurred;
CREATE INDEX billing_response_history_occurred ON billing_response_history
    USING brin (occurred_at) WITH (autosummarize = on);
DROP INDEX billing_responses_invoice;
CREATE INDEX billing_responses_invoice ON billing_responses USING hash (invoice_id);
DROP INDEX billing_responses_correlation;
CREATE INDEX billing_responses_correlation ON billing_responses USING hash (correlation_id);

DROP INDEX exception_history_occurred;
CREATE INDEX exception_history_occurred ON exception_history USING brin (occurred_at) WITH (autosummarize = on);
DROP INDEX exceptions_correlation;
CREATE INDEX exceptions_correlation ON exceptions USING hash (correlation_id);

DROP INDEX dead_letters_correlation;
CREATE INDEX dead_letters_correlation ON dead_letters USING hash (correlation_id);
