-- Vendor verification of the multi-timeframe bars (compute/vendor_check.py, run by
-- compute.bar_aggregator_1m_to_multi --verify-vendor kite): how far each instrument's bars of
-- each timeframe were compared with the vendor's candles, so a restart resumes there.
-- Each verification pass is a merge_runs row (source 'vendor:kite', dry_run unless
-- --verify-correct) and each correction a bar_corrections row (03_bar_corrections.sql).
-- Idempotent: safe to apply on a database that already has these objects.

CREATE TABLE IF NOT EXISTS vendor_verify_state (
    source            text NOT NULL,                  -- vendor:kite
    tf                text NOT NULL,                  -- 3m | 5m | 15m | 30m | 60m
    instrument_token  bigint NOT NULL,
    verified_to       timestamptz NOT NULL,           -- buckets starting before this were compared
    last_run_id       uuid,                           -- merge_runs row of the pass that got here
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, tf, instrument_token)
);
