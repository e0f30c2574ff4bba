// A price-time priority order book for one instrument: integer tick prices, integer quantities.
//
// Every call appends what it caused to ``events`` (the caller clears it), in order, so the same
// calls always give the same stream. Semantics (the Python reference book in
// tests/reference/matcher_ref.py is written from this list and fuzzed against it):
//
// - submit: invalid requests are ``rejected`` (checked in this order: qty, price, trigger,
//   duplicate live id); otherwise ``accepted`` (price, qty), then trades. A trade event carries the
//   resting order (maker), the incoming one (taker, also ``order_id``), the maker's price and the
//   quantity; an order that has traded its whole quantity gets ``done`` (a maker right after its
//   trade, the taker after its last one).
// - LIMIT rests its remainder; MARKET and IOC cancel it (reason ``unfilled``); FOK trades only if
//   its whole quantity is available at once (else ``cancelled``, reason ``fok``).
// - SL / SL-M wait for the last trade price to reach the trigger (BUY: last >= trigger, SELL:
//   last <= trigger), checked after every call; a triggered order (``triggered``) runs as a LIMIT
//   (SL) or MARKET (SL-M). Several triggered at once run in submission order, one at a time.
//   The last price is the book's last trade, or what ``set_last_price`` says (the market's).
// - Self-trade prevention: an incoming order meeting a resting order of the same non-zero owner
//   stops there; its remainder is cancelled (reason ``self_trade``).
// - cancel: ``cancelled`` (reason ``user``, the open quantity) or ``rejected`` (``unknown_order``:
//   never seen, or already done).
// - modify(price, qty): qty is the new open quantity. Same price and a smaller (or equal) qty keeps
//   the order's place; a larger qty goes to the back of its level; a new price re-enters the book
//   (it may trade) behind everything at that price. Answered by ``accepted`` with the new values.
//   A waiting stop may change its price, qty and trigger (0 keeps the trigger).
// - A remainder that would make one side's resting prices span MAX_SPAN ticks or more is cancelled
//   (reason ``price_out_of_range``). Prices and quantities are in (0, 2^40].
#pragma once

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "id_map.hpp"
#include "ladder.hpp"

namespace matcher {

enum Side : uint8_t { BUY = 0, SELL = 1 };
enum Type : uint8_t { LIMIT = 0, MARKET = 1, IOC = 2, FOK = 3, SL = 4, SLM = 5 };
enum Kind : uint8_t { ACCEPTED = 0, REJECTED = 1, TRADE = 2, CANCELLED = 3, TRIGGERED = 4, DONE = 5 };
enum Reason : uint8_t {
    R_NONE = 0,
    R_DUPLICATE_ID,
    R_INVALID_QTY,
    R_INVALID_PRICE,
    R_INVALID_TRIGGER,
    R_UNKNOWN_ORDER,
    R_PRICE_OUT_OF_RANGE,
    R_USER,
    R_UNFILLED,
    R_FOK,
    R_SELF_TRADE,
};
/// Batch operations.
enum Op : uint8_t { OP_SUBMIT = 0, OP_CANCEL = 1, OP_MODIFY = 2, OP_LAST_PRICE = 3 };

constexpr int64_t MAX_PRICE = int64_t(1) << 40;
constexpr int64_t MAX_QTY = int64_t(1) << 40;

struct Event {
    int64_t order_id;
    int64_t maker_id;
    int64_t taker_id;
    int64_t price;
    int64_t qty;
    uint8_t kind;
    uint8_t reason;
};

struct Order {
    int64_t id;
    int64_t price;    // limit price (0 for MARKET / SL-M)
    int64_t qty;      // open quantity
    int64_t owner;
    int64_t trigger;  // stops only
    uint64_t seq;     // submission order (stops trigger in this order)
    uint32_t prev, next;
    uint8_t side, type;
    uint8_t state;  // RESTING or STOP
};

enum State : uint8_t { RESTING = 1, STOP = 2 };

/// A read-only view of a live order (``Book::find``).
struct OrderInfo {
    int64_t id, price, qty, owner, trigger;
    uint8_t side, type, state;
};

class Book {
   public:
    std::vector<Event> events;

    Book() : bids_(true), asks_(false) {}

    void submit(int64_t id, uint8_t side, uint8_t type, int64_t qty, int64_t price, int64_t trigger, int64_t owner);
    void cancel(int64_t id);
    void modify(int64_t id, int64_t price, int64_t qty, int64_t trigger);
    /// The market's last trade price (stops trigger on it); invalid prices are rejected for ``id``.
    void set_last_price(int64_t price, int64_t id = 0);

    bool best_bid(int64_t& p) const { return bids_.empty() ? false : (p = bids_.best_price(), true); }
    bool best_ask(int64_t& p) const { return asks_.empty() ? false : (p = asks_.best_price(), true); }
    bool last_price(int64_t& p) const { return has_last_ ? (p = last_, true) : false; }
    /// Up to ``n`` levels per side, best first: (price, total open qty).
    void depth(size_t n, std::vector<std::pair<int64_t, int64_t>>& bids,
               std::vector<std::pair<int64_t, int64_t>>& asks) const;
    /// Live orders (resting and waiting stops).
    size_t size() const { return ids_.size(); }
    bool find(int64_t id, OrderInfo& out) const;
    /// Every live order: resting ones best price first in time priority per side, then stops.
    std::vector<OrderInfo> orders() const;
    void clear();

   private:
    void emit(uint8_t kind, int64_t order_id, int64_t price, int64_t qty, uint8_t reason = R_NONE,
              int64_t maker = 0, int64_t taker = 0) {
        events.push_back(Event{order_id, maker, taker, price, qty, kind, reason});
    }
    uint32_t alloc();
    void release(uint32_t i) { free_.push_back(i); }
    void execute(int64_t id, uint8_t side, uint8_t type, int64_t qty, int64_t price, int64_t owner, uint64_t seq);
    int64_t sweep(int64_t id, uint8_t side, bool market, int64_t limit, int64_t qty, int64_t owner, bool& stp);
    bool fillable(uint8_t side, int64_t limit, int64_t qty, int64_t owner) const;
    void rest(uint32_t i);
    void unlink(uint32_t i);
    void add_stop(uint32_t i);
    void remove_stop(const Order& o);
    void run_stops();
    static bool triggers(uint8_t side, int64_t trigger, int64_t last) {
        return side == BUY ? last >= trigger : last <= trigger;
    }
    static OrderInfo info(const Order& o) {
        return OrderInfo{o.id, o.price, o.qty, o.owner, o.trigger, o.side, o.type, o.state};
    }

    Ladder bids_, asks_;
    std::vector<Order> pool_;
    std::vector<uint32_t> free_;
    IdMap ids_;
    // Waiting stops by (trigger, seq) -> pool slot.
    std::map<std::pair<int64_t, uint64_t>, uint32_t> buy_stops_, sell_stops_;
    uint64_t seq_ = 0;
    int64_t last_ = 0;
    bool has_last_ = false;
};

}  // namespace matcher
