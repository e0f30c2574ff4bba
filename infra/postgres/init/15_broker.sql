-- The Zerodha gateway (dry|live) and its reconciliation poller.

-- One row per order the gateway takes: the at-most-once ledger. `state` says what we know of the
-- broker side: queued (never sent), sending (a request may be in flight: written before the call),
-- uncertain (a reply was ambiguous: look the tag up before anything else), placed, rejected, cancelled
-- (a cancel request came before it was sent), dry.
CREATE TABLE IF NOT EXISTS broker_placements (
    order_id        text PRIMARY KEY,
    tag             text NOT NULL UNIQUE,
    venue           text NOT NULL CHECK (venue IN ('dry', 'live')),
    state           text NOT NULL CHECK (state IN ('queued', 'sending', 'uncertain', 'placed', 'rejected', 'cancelled',
                                                   'dry')),
    attempts        integer NOT NULL DEFAULT 0,
    broker_order_id text,
    last_error      text,
    uncertain_since timestamptz,
    next_try_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS broker_placements_open_idx ON broker_placements (state)
    WHERE state IN ('queued', 'sending', 'uncertain');

-- Order requests sent to Kite (place, cancel), so a restarted gateway paces itself with the calls its previous
-- run made (Kite counts 10 a second, 400 a calendar minute, 5000 a day, whoever sent them). Kept two days.
CREATE TABLE IF NOT EXISTS broker_requests (
    at   timestamptz NOT NULL DEFAULT now(),
    kind text NOT NULL
);
CREATE INDEX IF NOT EXISTS broker_requests_at_idx ON broker_requests (at);

-- What the poller flagged: broker orders unknown to us, our placed orders missing at the broker, a tag
-- seen on two broker orders. One row per (kind, ref); `last_seen` moves while it persists.
CREATE TABLE IF NOT EXISTS broker_alerts (
    kind       text NOT NULL,
    ref        text NOT NULL,
    detail     text,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now(),
    cleared    boolean NOT NULL DEFAULT false,
    PRIMARY KEY (kind, ref)
);

-- Protective stops at the broker: an SL-M exit placed after an entry fills, linked to the position.
CREATE TABLE IF NOT EXISTS protective_stops (
    entry_order_id   text PRIMARY KEY,
    stop_order_id    text NOT NULL UNIQUE,     -- our order id of the SL-M exit (an orders row)
    strategy         text NOT NULL,
    instrument_token bigint NOT NULL,
    qty              integer NOT NULL CHECK (qty > 0),
    trigger_price    double precision NOT NULL,
    state            text NOT NULL CHECK (state IN ('active', 'cancelling', 'cancelled', 'done')),
    exit_order_id    text,                     -- the strategy exit that asked for it to be cancelled
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS protective_stops_key_idx ON protective_stops (strategy, instrument_token)
    WHERE state IN ('active', 'cancelling');
