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
-- (status, updated_at) serves every lookup by status: one index less to rewrite on each state change
DROP INDEX IF EXISTS orders_status_idx;
CREATE INDEX IF NOT EXISTS fills_strategy_idx ON fills (strategy, instrument_token);
-- exits still able to trade (the manager caps a new exit at the position less these)
CREATE INDEX IF NOT EXISTS orders_open_exits_idx ON orders (strategy, instrument_token, side)
    WHERE status IN ('SIZED', 'ALLOWED', 'SUBMITTED', 'OPEN', 'PARTIALLY_FILLED', 'CANCEL_REQUESTED')
      AND COALESCE(extra->>'intent', 'entry') <> 'entry' AND qty IS NOT NULL;

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

-- Net position per strategy and instrument, maintained from fills by a trigger (a fill is inserted
-- once, by fill_id; ON CONFLICT DO NOTHING fires no trigger): the one truth risk and recon read, O(1)
-- to look up however many fills there are.
CREATE TABLE IF NOT EXISTS positions (
    strategy         text NOT NULL,
    instrument_token bigint NOT NULL,
    net_qty          bigint NOT NULL DEFAULT 0,
    buy_qty          bigint NOT NULL DEFAULT 0,
    buy_value        double precision NOT NULL DEFAULT 0,
    sell_qty         bigint NOT NULL DEFAULT 0,
    sell_value       double precision NOT NULL DEFAULT 0,
    last_fill_ts     timestamptz,
    PRIMARY KEY (strategy, instrument_token)
);
CREATE INDEX IF NOT EXISTS positions_open_idx ON positions (instrument_token) WHERE net_qty <> 0;

CREATE OR REPLACE FUNCTION positions_on_fill() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO positions AS p (strategy, instrument_token, net_qty, buy_qty, buy_value, sell_qty, sell_value,
                                last_fill_ts)
    VALUES (COALESCE(NEW.strategy, ''), NEW.instrument_token,
            CASE WHEN NEW.side = 'BUY' THEN NEW.qty ELSE -NEW.qty END,
            CASE WHEN NEW.side = 'BUY' THEN NEW.qty ELSE 0 END,
            CASE WHEN NEW.side = 'BUY' THEN NEW.qty * NEW.price ELSE 0 END,
            CASE WHEN NEW.side = 'SELL' THEN NEW.qty ELSE 0 END,
            CASE WHEN NEW.side = 'SELL' THEN NEW.qty * NEW.price ELSE 0 END, NEW.ts)
    ON CONFLICT (strategy, instrument_token) DO UPDATE SET
        net_qty = p.net_qty + EXCLUDED.net_qty, buy_qty = p.buy_qty + EXCLUDED.buy_qty,
        buy_value = p.buy_value + EXCLUDED.buy_value, sell_qty = p.sell_qty + EXCLUDED.sell_qty,
        sell_value = p.sell_value + EXCLUDED.sell_value,
        last_fill_ts = GREATEST(p.last_fill_ts, EXCLUDED.last_fill_ts);
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS fills_positions ON fills;
CREATE TRIGGER fills_positions AFTER INSERT ON fills FOR EACH ROW EXECUTE FUNCTION positions_on_fill();
-- fills written before this migration
INSERT INTO positions (strategy, instrument_token, net_qty, buy_qty, buy_value, sell_qty, sell_value, last_fill_ts)
SELECT COALESCE(strategy, ''), instrument_token, sum(CASE WHEN side = 'BUY' THEN qty ELSE -qty END),
       COALESCE(sum(qty) FILTER (WHERE side = 'BUY'), 0), COALESCE(sum(qty * price) FILTER (WHERE side = 'BUY'), 0),
       COALESCE(sum(qty) FILTER (WHERE side = 'SELL'), 0), COALESCE(sum(qty * price) FILTER (WHERE side = 'SELL'), 0),
       max(ts)
FROM fills GROUP BY COALESCE(strategy, ''), instrument_token
ON CONFLICT (strategy, instrument_token) DO NOTHING;

-- Entries on their way, per strategy and instrument (unfilled qty and its notional at the sized entry
-- price), maintained by a trigger on every write to orders: SIZED (waiting for the guard: the manager's
-- position limits count it) and pending (ALLOWED .. CANCEL_REQUESTED: the guard's budgets count it).
CREATE TABLE IF NOT EXISTS risk_pending (
    strategy         text NOT NULL,
    instrument_token bigint NOT NULL,
    sized_qty        bigint NOT NULL DEFAULT 0,
    sized_notional   double precision NOT NULL DEFAULT 0,
    pending_qty      bigint NOT NULL DEFAULT 0,
    pending_notional double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (strategy, instrument_token)
);

CREATE OR REPLACE FUNCTION risk_pending_apply(r orders, sgn integer) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    q  bigint;
    px double precision;
BEGIN
    IF r.qty IS NULL OR COALESCE(r.extra->>'intent', 'entry') <> 'entry' THEN
        RETURN;
    END IF;
    q := r.qty - r.filled_qty;
    IF q <= 0 THEN
        RETURN;
    END IF;
    px := COALESCE((r.risk->>'entry_price')::float8, r.price, (r.extra->>'ref_price')::float8, 0);
    IF r.status = 'SIZED' THEN
        INSERT INTO risk_pending AS p (strategy, instrument_token, sized_qty, sized_notional)
        VALUES (r.strategy, r.instrument_token, sgn * q, sgn * q * px)
        ON CONFLICT (strategy, instrument_token) DO UPDATE SET
            sized_qty = p.sized_qty + EXCLUDED.sized_qty, sized_notional = p.sized_notional + EXCLUDED.sized_notional;
    ELSIF r.status IN ('ALLOWED', 'SUBMITTED', 'OPEN', 'PARTIALLY_FILLED', 'CANCEL_REQUESTED') THEN
        INSERT INTO risk_pending AS p (strategy, instrument_token, pending_qty, pending_notional)
        VALUES (r.strategy, r.instrument_token, sgn * q, sgn * q * px)
        ON CONFLICT (strategy, instrument_token) DO UPDATE SET
            pending_qty = p.pending_qty + EXCLUDED.pending_qty,
            pending_notional = p.pending_notional + EXCLUDED.pending_notional;
    END IF;
END $$;

-- Allowed orders per strategy and window of signal_ts: second (epoch s), minute (epoch min), IST day
-- (the date's ordinal, as Python's date.toordinal()): the guard's order-count caps in O(1).
CREATE TABLE IF NOT EXISTS risk_order_counts (
    strategy text NOT NULL,
    win      char(1) NOT NULL CHECK (win IN ('s', 'm', 'd')),
    key      bigint NOT NULL,
    n        integer NOT NULL,
    PRIMARY KEY (strategy, win, key)
);
CREATE INDEX IF NOT EXISTS risk_order_counts_window_idx ON risk_order_counts (win, key);

CREATE OR REPLACE FUNCTION risk_count_apply(r orders, sgn integer) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    s bigint;
BEGIN
    IF r.signal_ts IS NULL OR (r.budget->>'decision') IS DISTINCT FROM 'allowed' THEN
        RETURN;
    END IF;
    s := floor(extract(epoch FROM r.signal_ts))::bigint;
    INSERT INTO risk_order_counts AS c (strategy, win, key, n)
    VALUES (r.strategy, 's', s, sgn), (r.strategy, 'm', floor(s / 60.0)::bigint, sgn),
           (r.strategy, 'd', ((r.signal_ts AT TIME ZONE 'Asia/Kolkata')::date - date '0001-01-01') + 1, sgn)
    ON CONFLICT (strategy, win, key) DO UPDATE SET n = c.n + EXCLUDED.n;
END $$;

-- What an order contributes to risk_pending: NULL for nothing, else class|strategy|token|qty|price.
CREATE OR REPLACE FUNCTION risk_pending_part(r orders) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN r.qty IS NULL OR COALESCE(r.extra->>'intent', 'entry') <> 'entry' OR r.qty - r.filled_qty <= 0 THEN NULL
        WHEN r.status = 'SIZED' THEN 's'
        WHEN r.status IN ('ALLOWED', 'SUBMITTED', 'OPEN', 'PARTIALLY_FILLED', 'CANCEL_REQUESTED') THEN 'p'
        END || '|' || r.strategy || '|' || r.instrument_token || '|' || (r.qty - r.filled_qty) || '|'
        || COALESCE((r.risk->>'entry_price')::float8, r.price, (r.extra->>'ref_price')::float8, 0)
$$;

-- The books change only when an order's contribution does: an UPDATE that leaves it as it was (a
-- working order moving SUBMITTED -> OPEN, a budget detail) touches no book row, so writers never
-- queue on (or deadlock over) the books' hot rows for nothing.
CREATE OR REPLACE FUNCTION orders_risk_books() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF risk_pending_part(OLD) IS DISTINCT FROM risk_pending_part(NEW) THEN
            PERFORM risk_pending_apply(OLD, -1);
            PERFORM risk_pending_apply(NEW, 1);
        END IF;
        IF (OLD.budget->>'decision') IS DISTINCT FROM (NEW.budget->>'decision')
           OR OLD.signal_ts IS DISTINCT FROM NEW.signal_ts OR OLD.strategy IS DISTINCT FROM NEW.strategy THEN
            PERFORM risk_count_apply(OLD, -1);
            PERFORM risk_count_apply(NEW, 1);
        END IF;
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        PERFORM risk_pending_apply(OLD, -1);
        PERFORM risk_count_apply(OLD, -1);
    ELSE
        PERFORM risk_pending_apply(NEW, 1);
        PERFORM risk_count_apply(NEW, 1);
    END IF;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS orders_risk_books ON orders;
CREATE TRIGGER orders_risk_books AFTER INSERT OR DELETE ON orders FOR EACH ROW EXECUTE FUNCTION orders_risk_books();
-- on UPDATE only when something the books read changed (the OMS rewrites every column of a changed row)
DROP TRIGGER IF EXISTS orders_risk_books_update ON orders;
CREATE TRIGGER orders_risk_books_update AFTER UPDATE ON orders FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.qty IS DISTINCT FROM NEW.qty
          OR OLD.filled_qty IS DISTINCT FROM NEW.filled_qty OR OLD.risk IS DISTINCT FROM NEW.risk
          OR OLD.budget IS DISTINCT FROM NEW.budget OR OLD.strategy IS DISTINCT FROM NEW.strategy
          OR OLD.instrument_token IS DISTINCT FROM NEW.instrument_token
          OR OLD.signal_ts IS DISTINCT FROM NEW.signal_ts OR OLD.extra IS DISTINCT FROM NEW.extra
          OR OLD.price IS DISTINCT FROM NEW.price)
    EXECUTE FUNCTION orders_risk_books();
-- orders written before this migration
DO $$
DECLARE
    r orders;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM risk_pending) AND NOT EXISTS (SELECT 1 FROM risk_order_counts) THEN
        FOR r IN SELECT * FROM orders LOOP
            PERFORM risk_pending_apply(r, 1);
            PERFORM risk_count_apply(r, 1);
        END LOOP;
    END IF;
END $$;
