-- Risk and OMS: order versions and an audit of every applied change (and of refused ones),
-- the kill switch, and the budget guard's view of what each bucket uses.

-- Each applied OMS change bumps orders.version; its audit row carries that version (unique per order),
-- so the audit explains every change exactly once. Refused (illegal) attempts are audited with
-- applied = false, once per distinct attempt.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS version integer NOT NULL DEFAULT 1;
ALTER TABLE order_audit ADD COLUMN IF NOT EXISTS applied boolean NOT NULL DEFAULT true;
ALTER TABLE order_audit ADD COLUMN IF NOT EXISTS version integer;
ALTER TABLE order_audit ADD COLUMN IF NOT EXISTS filled_qty integer;
-- 07's uniqueness on (order, from, to, ts, source) would drop a second fill's audit row at the same
-- instant; the version replaces it.
ALTER TABLE order_audit DROP CONSTRAINT IF EXISTS order_audit_order_id_from_status_to_status_ts_source_key;
CREATE UNIQUE INDEX IF NOT EXISTS order_audit_version_uq ON order_audit (order_id, version) WHERE applied;
CREATE UNIQUE INDEX IF NOT EXISTS order_audit_refused_uq ON order_audit (order_id, from_status, to_status, detail)
    WHERE NOT applied;

-- The guard's event-time order counts and the stages' re-drive scans.
CREATE INDEX IF NOT EXISTS orders_signal_idx ON orders (signal_ts);
CREATE INDEX IF NOT EXISTS orders_status_updated_idx ON orders (status, updated_at);
CREATE INDEX IF NOT EXISTS fills_strategy_idx ON fills (strategy, instrument_token);

-- The kill switch: one row; every change also logged.
CREATE TABLE IF NOT EXISTS risk_kill_switch (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    active      boolean NOT NULL,
    reason      text,
    changed_by  text,
    changed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS risk_kill_switch_log (
    id          bigserial PRIMARY KEY,
    active      boolean NOT NULL,
    reason      text,
    changed_by  text,
    changed_at  timestamptz NOT NULL DEFAULT now()
);

-- What each bucket uses (exposure of open positions + pending entries), as the guard last computed
-- it from orders and fills: the numbers behind its decisions, for operators and dashboards.
CREATE TABLE IF NOT EXISTS risk_budget_usage (
    bucket       text PRIMARY KEY,
    budget       double precision NOT NULL,
    used         double precision NOT NULL,
    positions    double precision NOT NULL,
    pending      double precision NOT NULL,
    open_positions integer NOT NULL,
    day_pnl      double precision,    -- the latest decided IST day: realised + open (marked to 1 s bars)
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Net position per strategy and instrument, from fills (the one truth risk and recon read; the
-- paper gateway's issue may replace this view with a maintained table of the same shape).
CREATE OR REPLACE VIEW positions AS
SELECT strategy, instrument_token,
       sum(CASE WHEN side = 'BUY' THEN qty ELSE -qty END)::bigint           AS net_qty,
       COALESCE(sum(qty) FILTER (WHERE side = 'BUY'), 0)::bigint            AS buy_qty,
       COALESCE(sum(qty * price) FILTER (WHERE side = 'BUY'), 0)            AS buy_value,
       COALESCE(sum(qty) FILTER (WHERE side = 'SELL'), 0)::bigint           AS sell_qty,
       COALESCE(sum(qty * price) FILTER (WHERE side = 'SELL'), 0)           AS sell_value,
       max(ts)                                                              AS last_fill_ts
FROM fills
GROUP BY strategy, instrument_token;
