-- Research: daily results per strategy (backtests, and paper / dry / live from fills) and the
-- next-day scores and promotion decisions made from them (python -m backtest.scorer).

-- One row per (source, run, strategy label, IST day of the trades' exits): closed round trips only.
-- A backtest run records under its run id; fills-derived results under run id 'fills'.
CREATE TABLE IF NOT EXISTS strategy_results (
    source       text NOT NULL CHECK (source IN ('backtest', 'paper', 'dry', 'live')),
    run_id       text NOT NULL,
    strategy     text NOT NULL,
    day          date NOT NULL,
    trades       integer NOT NULL CHECK (trades >= 0),
    wins         integer NOT NULL CHECK (wins >= 0 AND wins <= trades),
    gross_pnl    double precision NOT NULL,
    charges      double precision NOT NULL,
    net_pnl      double precision NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, run_id, strategy, day)
);
-- the scorer's window scan
CREATE INDEX IF NOT EXISTS strategy_results_day_idx ON strategy_results (day, source);

-- One row per (trading day decided for, registry strategy id): the score, the decision and why.
CREATE TABLE IF NOT EXISTS strategy_scores (
    scored_for   date NOT NULL,
    strategy     text NOT NULL,
    score        double precision NOT NULL,
    decision     text NOT NULL CHECK (decision IN ('promote', 'keep', 'demote')),
    enabled      boolean NOT NULL,
    reason       text NOT NULL,
    metrics      jsonb NOT NULL DEFAULT '{}'::jsonb,
    window_from  date,
    window_to    date,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scored_for, strategy)
);
