-- Daily historical merge (ingestion/merge_hist_daily.py): one row per run and
-- one row per corrected bar, with field-level old/new values.
-- Idempotent: safe to apply on a database that already has these objects.

CREATE TABLE IF NOT EXISTS merge_runs (
    run_id        uuid PRIMARY KEY,
    trade_date    date NOT NULL,
    tf            text NOT NULL DEFAULT '1m',
    source        text NOT NULL,                      -- kite | csv
    status        text NOT NULL DEFAULT 'running',    -- running | ok | partial | failed
    dry_run       boolean NOT NULL DEFAULT false,
    instruments   integer NOT NULL DEFAULT 0,
    reference     integer NOT NULL DEFAULT 0,         -- reference candles inside the session
    inserted      integer NOT NULL DEFAULT 0,         -- gaps filled
    updated       integer NOT NULL DEFAULT 0,         -- mismatches corrected
    unchanged     integer NOT NULL DEFAULT 0,
    extra         integer NOT NULL DEFAULT 0,         -- our bars the reference lacks (left alone)
    invalid       integer NOT NULL DEFAULT 0,         -- reference candles rejected as malformed
    failed        integer NOT NULL DEFAULT 0,         -- instruments whose reference could not be fetched
    tolerance     jsonb NOT NULL DEFAULT '{}'::jsonb,
    per_instrument jsonb NOT NULL DEFAULT '{}'::jsonb,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
CREATE INDEX IF NOT EXISTS merge_runs_date_idx ON merge_runs (trade_date, tf);

CREATE TABLE IF NOT EXISTS bar_corrections (
    id                bigserial PRIMARY KEY,
    run_id            uuid NOT NULL REFERENCES merge_runs (run_id),
    instrument_token  bigint NOT NULL,
    tf                text NOT NULL,
    ts                timestamptz NOT NULL,
    action            text NOT NULL CHECK (action IN ('insert', 'update')),
    reason            text NOT NULL,                  -- gap | mismatch
    detail            text NOT NULL DEFAULT '',
    old_values        jsonb,                          -- changed fields before (null for a gap)
    new_values        jsonb NOT NULL,                 -- changed fields after
    source            text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS bar_corrections_bar_idx ON bar_corrections (instrument_token, tf, ts);
CREATE INDEX IF NOT EXISTS bar_corrections_run_idx ON bar_corrections (run_id);
