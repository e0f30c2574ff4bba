-- Paper venue (execution/paper_gateway_matcher.py) and positions at average cost.

-- Our orders at the simulated venue: what a restart needs to put them back (time priority, queue
-- position, fills emitted so far). One row per order, upserted in the transaction that moves its OMS state.
CREATE TABLE IF NOT EXISTS paper_orders (
    order_id         text PRIMARY KEY,
    seq              bigint NOT NULL UNIQUE,          -- matcher id and time priority
    instrument_token bigint NOT NULL,
    strategy         text NOT NULL,
    exchange         text NOT NULL,
    side             text NOT NULL CHECK (side IN ('BUY', 'SELL')),
    order_type       text NOT NULL CHECK (order_type IN ('MARKET', 'LIMIT', 'SL', 'SL-M')),
    qty              integer NOT NULL CHECK (qty > 0),
    tick_size        double precision NOT NULL CHECK (tick_size > 0),
    price_ticks      bigint,
    trigger_ticks    bigint,
    filled           integer NOT NULL DEFAULT 0 CHECK (filled >= 0 AND filled <= qty),
    fills            integer NOT NULL DEFAULT 0,      -- fills emitted: the next fill_id is <order_id>-<fills + 1>
    state            text NOT NULL CHECK (state IN ('pending', 'stop', 'resting', 'done')),
    arrival_ts       timestamptz NOT NULL,
    expiry_ts        timestamptz,
    queue_ahead      bigint NOT NULL DEFAULT 0,       -- market quantity ahead of it at its price
    priority         bigint NOT NULL DEFAULT 0,       -- when it started resting / waiting: restored in this order
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS paper_orders_live_idx ON paper_orders (seq) WHERE state <> 'done';

-- The last tick the venue applied per instrument with orders working there: a tick at or below its
-- mark is a replay (consumed again after a crash) and is skipped, so no trade is counted twice.
CREATE TABLE IF NOT EXISTS paper_quotes (
    instrument_token bigint PRIMARY KEY,
    ts               timestamptz NOT NULL,
    quote            jsonb NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Messages a service wrote in the transaction that decided them, produced after it commits (then deleted):
-- a crash between the two loses nothing, the service's next start produces what is left (execution/outbox.py).
CREATE TABLE IF NOT EXISTS outbox (
    id         bigserial PRIMARY KEY,
    source     text NOT NULL,                   -- the service that wrote it (and sends it)
    topic      text NOT NULL,
    key        bytea,
    value      bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS outbox_source_idx ON outbox (source, id);

-- Positions at average cost: the open quantity's average price and the PnL realised by closing fills
-- (a fill that flips the position opens the rest at its own price).
ALTER TABLE positions ADD COLUMN IF NOT EXISTS avg_price double precision NOT NULL DEFAULT 0;
ALTER TABLE positions ADD COLUMN IF NOT EXISTS realized_pnl double precision NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION positions_apply(s text, tok bigint, side text, q bigint, px double precision,
                                           at timestamptz) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    d   bigint := CASE WHEN side = 'BUY' THEN q ELSE -q END;
    p   positions%ROWTYPE;
    avg double precision;
    pnl double precision;
BEGIN
    INSERT INTO positions (strategy, instrument_token) VALUES (s, tok) ON CONFLICT DO NOTHING;
    SELECT * INTO p FROM positions WHERE strategy = s AND instrument_token = tok FOR UPDATE;
    avg := p.avg_price;
    pnl := p.realized_pnl;
    IF p.net_qty = 0 OR sign(p.net_qty) = sign(d) THEN
        avg := (abs(p.net_qty) * p.avg_price + q * px) / (abs(p.net_qty) + q);
    ELSE
        pnl := pnl + least(abs(p.net_qty), q) * (px - p.avg_price) * sign(p.net_qty);
        IF q > abs(p.net_qty) THEN
            avg := px;
        ELSIF q = abs(p.net_qty) THEN
            avg := 0;
        END IF;
    END IF;
    UPDATE positions SET net_qty = p.net_qty + d,
        buy_qty = p.buy_qty + CASE WHEN side = 'BUY' THEN q ELSE 0 END,
        buy_value = p.buy_value + CASE WHEN side = 'BUY' THEN q * px ELSE 0 END,
        sell_qty = p.sell_qty + CASE WHEN side = 'SELL' THEN q ELSE 0 END,
        sell_value = p.sell_value + CASE WHEN side = 'SELL' THEN q * px ELSE 0 END,
        avg_price = avg, realized_pnl = pnl, last_fill_ts = GREATEST(p.last_fill_ts, at)
    WHERE strategy = s AND instrument_token = tok;
END $$;

CREATE OR REPLACE FUNCTION positions_on_fill() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM positions_apply(COALESCE(NEW.strategy, ''), NEW.instrument_token, NEW.side, NEW.qty, NEW.price, NEW.ts);
    RETURN NULL;
END $$;

-- Fills recorded before this migration: replay them in time order through the same arithmetic.
DO $$
DECLARE f record;
BEGIN
    IF EXISTS (SELECT 1 FROM fills) THEN
        DELETE FROM positions;
        FOR f IN SELECT * FROM fills ORDER BY ts, recorded_at, fill_id LOOP
            PERFORM positions_apply(COALESCE(f.strategy, ''), f.instrument_token, f.side, f.qty, f.price, f.ts);
        END LOOP;
    END IF;
END $$;

-- PnL per strategy and instrument: realised at average cost, plus the open quantity marked to the
-- latest 1 s bar close (the same mark the budget guard uses). Risk and recon read this one truth.
CREATE OR REPLACE VIEW position_pnl AS
SELECT p.strategy, p.instrument_token, p.net_qty, p.avg_price, p.realized_pnl,
       m.close AS mark_price, m.ts AS mark_ts,
       CASE WHEN p.net_qty <> 0 AND m.close IS NOT NULL THEN p.net_qty * (m.close - p.avg_price) ELSE 0 END
           AS unrealized_pnl,
       p.realized_pnl + CASE WHEN p.net_qty <> 0 AND m.close IS NOT NULL
                             THEN p.net_qty * (m.close - p.avg_price) ELSE 0 END AS total_pnl,
       p.buy_qty, p.sell_qty, p.last_fill_ts
FROM positions p
LEFT JOIN LATERAL (SELECT b.close, b.ts FROM bars_1s b WHERE b.instrument_token = p.instrument_token
                   ORDER BY b.ts DESC LIMIT 1) m ON true;
